//! Customer types and validation.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::CustomersError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CustomerId(pub i64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    pub id: CustomerId,
    pub name: String,
    pub email: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCustomer {
    pub name: String,
    pub email: String,
}

impl NewCustomer {
    /// Trims the name, lower-cases the email (so `A@x.com` and `a@x.com` are one customer) and
    /// checks both.
    pub fn parse(name: &str, email: &str) -> Result<NewCustomer, CustomersError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(CustomersError::Invalid {
                field: "name",
                message: "name must be 1 to 200 characters".into(),
            });
        }
        let email = email.trim().to_lowercase();
        let valid = email.len() <= 254
            && !email.chars().any(char::is_whitespace)
            && email.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && domain.split('.').all(|label| !label.is_empty())
            });
        if !valid {
            return Err(CustomersError::Invalid {
                field: "email",
                message: "email must look like name@example.com".into(),
            });
        }
        Ok(NewCustomer {
            name: name.to_string(),
            email,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customers_are_validated_and_normalised() {
        let c = NewCustomer::parse("  Ada ", " Ada@Example.COM ").unwrap();
        assert_eq!(
            (c.name.as_str(), c.email.as_str()),
            ("Ada", "ada@example.com")
        );
        let bad = [
            ("", "a@b.co", "name"),
            ("Ada", "no-at-sign", "email"),
            ("Ada", "@b.co", "email"),
            ("Ada", "a@nodot", "email"),
            ("Ada", "a b@c.co", "email"),
            ("Ada", "a@b@c.co", "email"),
            ("Ada", "a@.", "email"),
            ("Ada", "a@b.", "email"),
        ];
        for (name, email, field) in bad {
            match NewCustomer::parse(name, email) {
                Err(CustomersError::Invalid { field: f, .. }) => {
                    assert_eq!(f, field, "{name} {email}")
                }
                other => panic!("{name} {email}: {other:?}"),
            }
        }
    }
}
