//! The data path's part in the parallel run: after the primary answered, the recorded sample
//! and the shadow copy (see [`crate::shadow`]) get what the exchange kept.

use super::*;

impl Router {
    /// After the primary answered: the recorded sample and the shadow copy get what they kept.
    pub(super) fn answered(
        &self,
        conn: &mut Conn,
        request: &Request,
        recording: Option<&Arc<Recorder>>,
    ) {
        // `None`: no body; `Some(None)`: one not kept whole (too large, or not all of it read).
        let body = conn
            .request_body
            .take()
            .map(|tee| shadow::whole_body(&tee, request.framing));
        if let Some(recorder) = recording
            && let Some(kept) = body.as_ref().map_or(Some(None), |b| b.as_deref().map(Some))
            && let Some(line) = record::line(request.head, request.target, kept)
        {
            recorder.record(&line);
        }
        if let Some(capture) = conn.shadow.take()
            && capture.answered()
        {
            self.launch_shadow(capture, request, body, &conn.client_ip);
        }
    }

    /// Hands the kept answer and copies of the request for both sides to the shadow task. A
    /// request with a body (a write) goes to the other side as a dry run, and never again to
    /// the primary.
    pub(super) fn launch_shadow(
        &self,
        capture: Capture,
        request: &Request,
        body: Option<Option<Vec<u8>>>,
        client_ip: &str,
    ) {
        let (Some(candidate), Some(route)) = (request.plan.shadow, request.plan.route) else {
            return;
        };
        let body = match body {
            None => None,
            Some(Some(body)) => Some(body),
            Some(None) => {
                self.shadows.too_large(&capture.route);
                return;
            }
        };
        let body = body.as_deref();
        // Reads are the methods `decide` may send to a side that does not own writes.
        let write = !matches!(request.head.method(), "GET" | "HEAD" | "OPTIONS");
        // A write is never sent to the primary a second time. A read is, to learn noise, or
        // when the primary may be the side behind: only a side that does not own the writes
        // can lag (the owner's position is its own end of WAL).
        let learn_noise = !write && self.shadows.learns_noise();
        // The live owner the request was decided with.
        let primary_owns_writes = request.plan.owner == Some(request.plan.primary);
        let for_upstream = |upstream: usize| {
            // The body, if any, goes whole, framed by its length.
            let copy = Request {
                framing: body.map_or(Framing::None, |b| Framing::Length(b.len() as u64)),
                ..*request
            };
            let mut bytes = Vec::new();
            self.write_request_head(&mut bytes, &copy, upstream, client_ip);
            // The head ends with an empty line: the shadow's own fields go before it.
            bytes.truncate(bytes.len() - 2);
            headers::write_field(&mut bytes, shadow::SHADOW_HEADER, b"1");
            if write {
                headers::write_field(&mut bytes, shadow::DRY_RUN_HEADER, b"1");
            }
            bytes.extend_from_slice(b"\r\n");
            bytes.extend_from_slice(body.unwrap_or_default());
            shadow::Target {
                authority: self.addresses[upstream].authority.clone(),
                request: bytes,
            }
        };
        self.shadows.launch(Job {
            rules: self.table.routes[route].rules.clone(),
            method: request.head.method().to_string(),
            target: request.target.to_string(),
            primary: (!write && (learn_noise || !primary_owns_writes))
                .then(|| for_upstream(request.plan.primary)),
            learn_noise,
            candidate: for_upstream(candidate),
            timeout: request.timeout,
            capture,
        });
    }
}
