//! The heads the data path writes: the request head sent upstream, and the answer's head sent
//! to the client.

use super::*;

impl Router {
    /// The head sent upstream: the client's, minus what belongs to the client's hop, plus the
    /// forwarding fields.
    pub(super) fn write_request_head(
        &self,
        out: &mut Vec<u8>,
        request: &Request,
        upstream: usize,
        client_ip: &str,
    ) {
        let head = request.head;
        let address = &self.addresses[upstream];
        out.clear();
        out.extend_from_slice(head.method().as_bytes());
        out.push(b' ');
        out.extend_from_slice(address.base.as_bytes());
        out.extend_from_slice(request.target.as_bytes());
        // A 1.0 client's request goes upstream as 1.0, so the answer comes in a form it reads.
        out.extend_from_slice(if head.minor == 0 {
            b" HTTP/1.0\r\n"
        } else {
            b" HTTP/1.1\r\n"
        });
        headers::write_field(out, "host", address.authority.as_bytes());
        let mut has_proto = false;
        let mut has_trace = false;
        let mut has_length = false;
        let hop = h1::HopFields::of(head);
        for (name, value) in head.fields() {
            if hop.stays(name) {
                continue;
            }
            if name.eq_ignore_ascii_case(b"content-length") {
                has_length = true;
                continue;
            }
            if [
                &b"host"[..],
                b"x-forwarded-for",
                b"x-forwarded-host",
                b"via",
            ]
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name))
            {
                continue;
            }
            if name.eq_ignore_ascii_case(b"traceparent") {
                // An invalid one is replaced, not passed on.
                if has_trace || !std::str::from_utf8(value).is_ok_and(headers::valid_traceparent) {
                    continue;
                }
                has_trace = true;
            }
            has_proto |= name.eq_ignore_ascii_case(b"x-forwarded-proto");
            headers::write_field(out, name, value);
        }
        match request.framing {
            Framing::Chunked => {
                let codings: Vec<&str> = head.list("transfer-encoding").collect();
                headers::write_field(out, "transfer-encoding", codings.join(", ").as_bytes());
            }
            // The one length the router framed the body by, never the fields as they came
            // (`5, 5`, or two fields, which a stricter parser downstream refuses).
            Framing::Length(length) => headers::write_length(out, length),
            _ if has_length => headers::write_length(out, 0),
            _ => {}
        }
        headers::write_appended(
            out,
            "x-forwarded-for",
            head.list("x-forwarded-for"),
            client_ip,
        );
        // An earlier hop (a TLS-terminating balancer) knows the original scheme better than we do.
        if !has_proto {
            headers::write_field(out, "x-forwarded-proto", b"http");
        }
        if let Some(host) = head.values("host").next() {
            headers::write_field(out, "x-forwarded-host", host);
        }
        headers::write_appended(out, "via", head.list("via"), &self.via);
        if !has_trace {
            let fresh =
                headers::fresh_traceparent((self.next_id(), self.next_id(), self.next_id()));
            headers::write_field(out, "traceparent", &fresh);
        }
        out.extend_from_slice(b"\r\n");
    }

    /// The head sent to the client: the upstream's, minus what belongs to its hop, plus `Via`
    /// and the router's own fields. Says whether it closes the connection: when `close` asks
    /// it, and when the answer's `Connection` names a framing field (the answer is relayed with
    /// its framing, but a second parser might have dropped that field).
    pub(super) fn write_response_head(
        &self,
        out: &mut Vec<u8>,
        answer: &Head,
        framing: Framing,
        upstream: usize,
        request: &Request,
        close: bool,
    ) -> bool {
        let reason = if upstream == request.plan.primary {
            request.plan.reason.as_str()
        } else {
            "fallback_to_legacy"
        };
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 ");
        // httparse accepts only three-digit status codes.
        let status = answer.status;
        out.extend_from_slice(&[
            b'0' + (status / 100 % 10) as u8,
            b'0' + (status / 10 % 10) as u8,
            b'0' + (status % 10) as u8,
        ]);
        out.push(b' ');
        out.extend_from_slice(answer.reason());
        out.extend_from_slice(b"\r\n");
        let hop = h1::HopFields::of(answer);
        let close = close || hop.names_framing();
        let mut has_length = false;
        for (name, value) in answer.fields() {
            if hop.stays(name) {
                continue;
            }
            if [
                UPSTREAM_HEADER,
                REASON_HEADER,
                "via",
                shadow::POSITION_HEADER,
            ]
            .iter()
            .any(|n| n.as_bytes().eq_ignore_ascii_case(name))
            {
                continue;
            }
            // Written once below, as the number the body is framed by.
            if name.eq_ignore_ascii_case(b"content-length") {
                has_length = true;
                continue;
            }
            headers::write_field(out, name, value);
        }
        match framing {
            Framing::Chunked => {
                let codings: Vec<&str> = answer.list("transfer-encoding").collect();
                headers::write_field(out, "transfer-encoding", codings.join(", ").as_bytes());
            }
            // A chunked body's length is in its chunks, and a body that runs until close has
            // none. Otherwise the one number (for HEAD, 204 and 304 the length the answer
            // describes; an unreadable one is dropped).
            Framing::UntilClose => {}
            Framing::Length(length) => headers::write_length(out, length),
            Framing::None if has_length => {
                if let Ok(Some(length)) = h1::content_length(answer) {
                    headers::write_length(out, length);
                }
            }
            Framing::None => {}
        }
        headers::write_appended(out, "via", answer.list("via"), &self.via);
        headers::write_field(
            out,
            UPSTREAM_HEADER,
            self.table.upstreams[upstream].name.as_bytes(),
        );
        headers::write_field(out, REASON_HEADER, reason.as_bytes());
        if close {
            headers::write_field(out, "connection", b"close");
        } else if request.head.minor == 0 {
            headers::write_field(out, "connection", b"keep-alive");
        }
        out.extend_from_slice(b"\r\n");
        close
    }
}
