use super::*;

const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n-----END PRIVATE KEY-----\n";

#[test]
fn every_line_of_a_multi_line_secret_is_hidden_where_it_comes_alone() {
    let masks = Masks::new([PEM]);
    for line in PEM.lines() {
        assert_eq!(masks.scrub(line), "***", "{line}");
    }
    assert_eq!(masks.scrub(PEM), "***");
    assert_eq!(
        masks.scrub("key: MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\r"),
        "key: ***\r"
    );
}

#[test]
fn short_lines_of_a_multi_line_secret_are_not_hidden_everywhere() {
    let masks = Masks::new(["{\n}\nlong-enough\n"]);
    assert_eq!(masks.scrub("{ a }"), "{ a }");
    assert_eq!(masks.scrub("x long-enough y"), "x *** y");
}

#[test]
fn the_password_of_a_url_and_the_basic_header_made_from_it_are_hidden() {
    let masks = Masks::new(["https://admin:s%23cret@db.example:8443/x?y=1"]);
    // base64("admin:s#cret") and base64("admin:s%23cret")
    let decoded = base64::engine::general_purpose::STANDARD.encode("admin:s#cret");
    let raw = base64::engine::general_purpose::STANDARD.encode("admin:s%23cret");
    assert_eq!(
        masks.scrub(&format!("Authorization: Basic {decoded}")),
        "Authorization: Basic ***"
    );
    assert_eq!(masks.scrub(&format!("Basic {raw}")), "Basic ***");
    assert_eq!(
        masks.scrub("password s#cret was refused"),
        "password *** was refused"
    );
}

#[test]
fn overlapping_secrets_are_both_hidden() {
    let masks = Masks::new(["abcdef", "defghi"]);
    assert_eq!(masks.scrub("xxabcdefghixx"), "xx***xx");
    assert_eq!(masks.scrub("defghi abcdef"), "*** ***");
}

#[test]
fn a_secret_cut_between_two_pieces_is_held_back_and_hidden_whole() {
    let masks = Masks::new(["TOPSECRETVALUE", "VALUE-2"]);
    let (shown, held) = masks.split("line begins TOPSEC", true);
    assert_eq!(shown, "line begins ");
    assert_eq!(held, "TOPSEC");
    let (shown, held) = masks.split(&format!("{held}RETVALUE and more"), false);
    assert_eq!((shown.as_str(), held.as_str()), ("*** and more", ""));
    // A whole secret at the end may be the head of a longer one: held too.
    let masks = Masks::new(["abcd", "abcdefgh"]);
    let (shown, held) = masks.split("xx abcd", true);
    assert_eq!((shown.as_str(), held.as_str()), ("xx ", "abcd"));
    let (shown, _) = masks.split(&format!("{held}efgh yy"), false);
    assert_eq!(shown, "*** yy");
}

#[test]
fn a_cut_text_hides_what_may_begin_a_secret() {
    let masks = Masks::new(["hunter2hunter2"]);
    assert_eq!(
        masks.scrub_cut("the password is hunter2hu"),
        "the password is ***"
    );
    assert_eq!(masks.scrub_cut("nothing to hide"), "nothing to hide");
}

#[test]
fn no_secret_changes_nothing() {
    let masks = Masks::new(Vec::<String>::new());
    assert!(masks.is_empty());
    assert_eq!(masks.scrub("a *** b"), "a *** b");
}

#[test]
fn the_path_and_query_of_a_secret_url_are_hidden_where_they_show_up_alone() {
    let masks =
        Masks::new(["https://hooks.slack.com/services/T000/B000/XXXXSECRET?token=abcd1234&x=1"]);
    assert_eq!(
        masks.scrub("POST https://hooks.slack.com/services/T000/B000/XXXXSECRET failed"),
        "POST https://hooks.slack.com*** failed"
    );
    assert_eq!(masks.scrub("token=abcd1234"), "token=***");
    // A short path is not hidden everywhere.
    let masks = Masks::new(["https://host/api"]);
    assert_eq!(masks.scrub("GET /api"), "GET /api");
}

#[test]
fn what_is_held_back_stays_bounded_whatever_is_printed() {
    let masks = Masks::new(["abab"]);
    let text = "ab".repeat(10_000);
    let (shown, held) = masks.split(&text, true);
    assert!(held.len() <= 8, "{} bytes held", held.len());
    assert!(!shown.contains("abab"), "{}", &shown[..40.min(shown.len())]);
    assert!(shown.starts_with("***"));
}
