//! What kind of failure each protocol client's error is, for the step
//! adapters: the clients know nothing of steps, so the mapping lives here.
//! The sentence stays the client's own.

use crate::actions::command::CommandError;
use crate::actions::http::{HttpError, PromError};
use crate::actions::kube::KubeError;
use crate::actions::postgres::PgError;
use crate::actions::redis::RedisError;
use crate::actions::step::{FailureKind, StepError};
use crate::actions::tls::TlsError;
use crate::error::NO_SUCH_FILE;
use FailureKind::{NotFound, Other, Rejected, TimedOut, Unauthorised, Unreachable, Value};

fn failed(kind: FailureKind, e: &impl std::fmt::Display) -> StepError {
    StepError::new(kind, e.to_string())
}

impl From<CommandError> for StepError {
    fn from(e: CommandError) -> Self {
        let kind = match &e {
            CommandError::Start { why, .. } if why == NO_SUCH_FILE => NotFound,
            _ => Other,
        };
        failed(kind, &e)
    }
}

impl From<HttpError> for StepError {
    fn from(e: HttpError) -> Self {
        let kind = match &e {
            HttpError::BadUrl(_) | HttpError::BadMethod(_) | HttpError::BadHeader(_) => Value,
            // No answer: refused, reset, timed out, a name that does not resolve.
            HttpError::Failed(_) => Unreachable,
        };
        failed(kind, &e)
    }
}

impl From<PromError> for StepError {
    fn from(e: PromError) -> Self {
        match e {
            PromError::Http(http) => http.into(),
            e @ PromError::Refused { .. } => failed(Rejected, &e),
            e => failed(Other, &e),
        }
    }
}

impl From<TlsError> for StepError {
    fn from(e: TlsError) -> Self {
        let kind = match &e {
            TlsError::Connect(..) => Unreachable,
            TlsError::File(_, why) if why == NO_SUCH_FILE => NotFound,
            _ => Other,
        };
        failed(kind, &e)
    }
}

impl From<PgError> for StepError {
    fn from(e: PgError) -> Self {
        let kind = match &e {
            PgError::Malformed { .. } | PgError::Params { .. } => Value,
            PgError::Connect { .. } | PgError::UnknownHost { .. } | PgError::Lost { .. } => {
                Unreachable
            }
            PgError::Login { .. } => Unauthorised,
            PgError::NoDatabase { .. } | PgError::DumpMissing { .. } => NotFound,
            PgError::Sql { .. } => Rejected,
            PgError::TimedOut { .. } => TimedOut,
            _ => Other,
        };
        failed(kind, &e)
    }
}

impl From<KubeError> for StepError {
    fn from(e: KubeError) -> Self {
        // How this machine reaches a cluster is no line of the runbook's.
        if matches!(
            e,
            KubeError::NoKubeconfig { .. }
                | KubeError::Kubeconfig { .. }
                | KubeError::NoCurrentContext
                | KubeError::InCluster { .. }
        ) {
            let kind = match e {
                KubeError::NoKubeconfig { .. } => NotFound,
                _ => Other,
            };
            return failed(kind, &e).nowhere();
        }
        let kind = match &e {
            KubeError::Unreachable { .. } => Unreachable,
            KubeError::Refused { .. } | KubeError::Forbidden { .. } => Unauthorised,
            KubeError::Api { code: 401, .. } => Unauthorised,
            KubeError::Api { code: 404, .. }
            | KubeError::NotFound { .. }
            | KubeError::NoSuchContainer { .. } => NotFound,
            KubeError::Api { .. } | KubeError::Conflict { .. } => Rejected,
            _ => Other,
        };
        failed(kind, &e)
    }
}

impl From<RedisError> for StepError {
    fn from(e: RedisError) -> Self {
        let kind = match &e {
            RedisError::BadUrl(_) => Value,
            RedisError::Missing(_) => NotFound,
            RedisError::Connect { .. } | RedisError::Lost { .. } | RedisError::Handshake { .. } => {
                Unreachable
            }
            RedisError::TlsFile { .. } => Value,
            RedisError::Refused { .. } => Rejected,
            _ => Other,
        };
        failed(kind, &e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_error_keeps_its_sentence_and_says_its_kind() {
        let e = StepError::from(PgError::Login {
            target: "db:5432".into(),
            why: "password authentication failed".into(),
        });
        assert_eq!(e.kind, Unauthorised);
        assert!(e.message.contains("refused the login"), "{}", e.message);
        // A 403 that is no missing permission (a namespace being deleted).
        let e = StepError::from(KubeError::Api {
            server: "https://k".into(),
            code: 403,
            reason: "Forbidden".into(),
            message: "no".into(),
        });
        assert_eq!(e.kind, Rejected);
        let e = StepError::from(KubeError::Forbidden {
            server: "https://k".into(),
            context: "c".into(),
            denied: Box::new(crate::actions::kube::Denied {
                user: "u".into(),
                verb: "get".into(),
                resource: "deployments.apps".into(),
                namespace: None,
            }),
        });
        assert_eq!(e.kind, Unauthorised);
        let e = StepError::from(KubeError::NotFound {
            name: "web".into(),
            namespace: "prod".into(),
        });
        assert_eq!(e.kind, NotFound);
        let e = StepError::from(PromError::Http(HttpError::Failed(
            "connection refused".into(),
        )));
        assert_eq!(e.kind, Unreachable);
        assert_eq!(e.message, "connection refused");
        assert_eq!(StepError::from("x").kind, Other);
    }

    #[test]
    fn how_this_machine_reaches_a_cluster_is_no_line_s_fault() {
        let span = crate::diagnostic::Span::new(3, 7);
        let e = StepError::from(KubeError::NoKubeconfig {
            looked: "KUBECONFIG".into(),
        })
        .at(span);
        assert_eq!((e.kind, e.at), (NotFound, None));
        let e = StepError::from(KubeError::NotFound {
            name: "web".into(),
            namespace: "prod".into(),
        })
        .at(span);
        assert_eq!(e.at, Some(span));
        // The first place given stays.
        let e = StepError::from("x")
            .at(span)
            .at(crate::diagnostic::Span::new(0, 1));
        assert_eq!(e.at, Some(span));
    }
}
