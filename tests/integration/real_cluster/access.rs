//! Who may do what: token authentication over TLS with the cluster's own
//! CA, a token the server does not know (401), a ServiceAccount the server
//! knows but RBAC gives no right (403), and a CA that did not sign the
//! server's certificate.

use super::{report, runbook_file, RealCluster};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, PostParams};
use serde_json::json;

fn scale_file(test: &str, ns: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    runbook_file(
        test,
        &format!(
            "runbook access {{\n  scale more {{\n    deployment \"api\"\n    replicas 2\n    namespace \"{ns}\"\n    timeout 1m\n  }}\n}}\n"
        ),
    )
}

/// The token of a new ServiceAccount `name` in `ns` (the token controller
/// of Kubernetes 1.20 makes a Secret for it).
pub(super) fn service_account_token(k8s: &RealCluster, ns: &str, name: &str) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(k8s.client(), ns);
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    k8s.block_on(accounts.create(&PostParams::default(), &account))
        .expect("creates the service account");
    let secrets: Api<Secret> = Api::namespaced(k8s.client(), ns);
    let token = std::cell::RefCell::new(String::new());
    k8s.wait("the service account's token", || {
        let Ok(account) = k8s.block_on(accounts.get(name)) else {
            return false;
        };
        let Some(secret) = account.secrets.unwrap_or_default().into_iter().next() else {
            return false;
        };
        let Some(secret_name) = secret.name else {
            return false;
        };
        let Ok(secret) = k8s.block_on(secrets.get(&secret_name)) else {
            return false;
        };
        match secret.data.unwrap_or_default().get("token") {
            Some(bytes) => {
                *token.borrow_mut() = String::from_utf8(bytes.0.clone()).unwrap();
                true
            }
            None => false,
        }
    });
    token.into_inner()
}

#[test]
fn a_403_says_the_credentials_were_taken_and_which_permission_is_missing() {
    let Some(mut k8s) = RealCluster::here("real_rbac") else {
        return;
    };
    let ns = k8s.namespace("rbac");
    k8s.deployment(&ns, "api", 1, "registry.invalid/api:v1", json!({}));
    let token = service_account_token(&k8s, &ns, "nobody");
    let (dir, file) = scale_file("rbac", &ns);
    let kubeconfig = k8s.kubeconfig_with_token(&dir, &token);

    let out = k8s.runbook_with(
        &dir.join("state"),
        &["run", file.to_str().unwrap()],
        &kubeconfig,
    );
    assert_eq!(out.status.code(), Some(1), "{}", report(&out));
    let text = report(&out);
    assert!(
        text.contains(&format!(
            "the Kubernetes API server at https://127.0.0.1:{port} accepted the credentials of context real-someone, but user \"system:serviceaccount:{ns}:nobody\" may not get deployments.apps in namespace {ns}: a permission (RBAC) is missing",
            port = port(&k8s),
        )),
        "{text}"
    );
    assert!(!text.contains("refused the credentials"), "{text}");
    assert!(!text.contains(&token), "the token is never shown");

    // Allowed to read but not to write: the sentence names the write.
    grant(&k8s, &ns, "nobody", &["get", "list", "watch"]);
    let out = k8s.runbook_with(
        &dir.join("state2"),
        &["run", file.to_str().unwrap()],
        &kubeconfig,
    );
    assert_eq!(out.status.code(), Some(1), "{}", report(&out));
    assert!(
        report(&out).contains(&format!(
            "user \"system:serviceaccount:{ns}:nobody\" may not patch deployments.apps in namespace {ns}"
        )),
        "{}",
        report(&out)
    );
    assert_eq!(
        k8s.get(&ns, "api")["spec"]["replicas"],
        1,
        "nothing changed"
    );
}

#[test]
fn a_token_the_server_does_not_know_is_refused_credentials() {
    let Some(mut k8s) = RealCluster::here("real_401") else {
        return;
    };
    let ns = k8s.namespace("unknown-token");
    let (dir, file) = scale_file("unknown-token", &ns);
    let kubeconfig = k8s.kubeconfig_with_token(&dir, "not-a-token-of-this-cluster");
    let out = k8s.runbook_with(
        &dir.join("state"),
        &["run", file.to_str().unwrap()],
        &kubeconfig,
    );
    assert_eq!(out.status.code(), Some(1), "{}", report(&out));
    let text = report(&out);
    assert!(
        text.contains("refused the credentials of context real-someone: Unauthorized"),
        "{text}"
    );
    assert!(!text.contains("not-a-token-of-this-cluster"), "{text}");
}

#[test]
fn a_server_certificate_the_named_ca_did_not_sign_is_refused() {
    let Some(mut k8s) = RealCluster::here("real_wrong_ca") else {
        return;
    };
    let ns = k8s.namespace("wrong-ca");
    let (dir, file) = scale_file("wrong-ca", &ns);
    let kubeconfig = k8s.kubeconfig_with_token(&dir, "whatever");
    // The public roots: none of them signed the test cluster's own CA.
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    let ca_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("certificate-authority:"))
        .unwrap()
        .to_string();
    std::fs::write(
        &kubeconfig,
        text.replace(
            &ca_line,
            "    certificate-authority: /etc/ssl/certs/ca-certificates.crt",
        ),
    )
    .unwrap();
    let out = k8s.runbook_with(
        &dir.join("state"),
        &["run", file.to_str().unwrap()],
        &kubeconfig,
    );
    assert_eq!(out.status.code(), Some(1), "{}", report(&out));
    assert!(
        report(&out).contains(&format!(
            "cannot reach the Kubernetes API server at https://127.0.0.1:{}: the TLS handshake failed",
            port(&k8s)
        )),
        "{}",
        report(&out)
    );
}

/// A Role on deployments with `verbs`, bound to ServiceAccount `account`.
pub(super) fn grant(k8s: &RealCluster, ns: &str, account: &str, verbs: &[&str]) {
    let roles: Api<Role> = Api::namespaced(k8s.client(), ns);
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": format!("{account}-deployments")},
        "rules": [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": verbs}],
    }))
    .unwrap();
    k8s.block_on(roles.create(&PostParams::default(), &role))
        .expect("creates the role");
    let bindings: Api<RoleBinding> = Api::namespaced(k8s.client(), ns);
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("{account}-deployments")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": format!("{account}-deployments")},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": ns}],
    }))
    .unwrap();
    k8s.block_on(bindings.create(&PostParams::default(), &binding))
        .expect("binds the role");
}

pub(super) fn port(k8s: &RealCluster) -> u16 {
    let text = std::fs::read_to_string(&k8s.kubeconfig).unwrap();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("server: https://127.0.0.1:"))
        .and_then(|p| p.trim().parse().ok())
        .expect("the test cluster is at https://127.0.0.1:PORT")
}
