//! Parsing and compile checks of `dns`'s `with` and URL, and the inverse
//! of a change. Runs against a real BIND9 are in the e2e suite
//! (tests/dns_kind.rs, on lab/dns.sh).

use super::*;
use crate::{ActionConfig, Step};
use hickory_client::proto::rr::Name;

fn parse(yaml: &str) -> Result<Config, String> {
    serde_saphyr::from_str(yaml).map_err(|e| e.to_string())
}

fn problems(yaml: &str) -> Vec<(Vec<String>, String)> {
    parse(yaml).unwrap().compile().into_iter().map(|p| (p.path, p.message)).collect()
}

#[test]
fn every_action_parses_with_its_fields() {
    for yaml in [
        "action: set\nconnection: dns\nname: db\ntype: A\nrecords: [127.0.0.2]\nttl: 30\n",
        "action: set\nconnection: dns\nname: db\ntype: AAAA\nrecords: ['::1']\n",
        "action: set\nconnection: dns\nname: www\ntype: CNAME\nrecords: [db.lab.example.]\n",
        "action: set\nconnection: dns\nname: '@'\ntype: TXT\nrecords: [primary=pg2]\n",
        "action: delete\nurl: dns://127.0.0.1:5353/lab.example\nname: db\ntype: A\n",
        "action: get\nconnection: dns\nname: db.lab.example.\ntype: A\nservers: ['127.0.0.1:5353']\n",
        "action: wait_for\nconnection: dns\nname: db\ntype: A\nrecords: [127.0.0.2]\nservers: ['127.0.0.1:5353', '[::1]:53']\nwithin_seconds: 5\ninterval_ms: 100\n",
    ] {
        let c = parse(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
        assert_eq!(c.compile(), vec![], "{yaml}");
    }
}

#[test]
fn bad_types_values_and_fields_are_named() {
    let e = parse("action: set\nconnection: d\nname: db\ntype: MX\nrecords: [x]\n").unwrap_err();
    assert!(e.contains("unknown variant `MX`"), "{e}");
    assert_eq!(
        problems("action: set\nconnection: d\nname: db\ntype: A\nrecords: [10.0.0.1, '::1']\n"),
        vec![(
            vec!["records".into(), "1".into()],
            "`::1` is not an IPv4 address (an A record holds one)".into()
        )]
    );
    assert_eq!(
        problems("action: set\nconnection: d\nname: w\ntype: CNAME\nrecords: [db.lab]\n"),
        vec![(
            vec!["records".into(), "0".into()],
            "`db.lab`: a CNAME target is an absolute name, ending in `.`".into()
        )]
    );
    let p =
        problems("action: get\nconnection: d\nname: db\ntype: A\nttl: 5\nservers: [localhost]\n");
    assert_eq!(p[0], (vec!["ttl".into()], "`ttl` does not apply to action `get`".into()));
    assert_eq!(p[1].0, vec!["servers".to_string(), "0".into()]);
    assert!(p[1].1.contains("is not a server address"), "{p:?}");
    let p = problems("action: set\nconnection: d\nname: db\ntype: A\n");
    assert_eq!(
        p,
        vec![(vec!["records".into()], "`set` needs `records`, the values of the rrset".into())]
    );
    let p = problems("action: set\nconnection: d\nname: 'bad name'\ntype: A\nrecords: []\n");
    assert_eq!(p.len(), 2, "{p:?}");
    let p = problems("action: get\nurl: http://x/\nname: db\ntype: A\n");
    assert_eq!(p[0].0, vec!["url".to_string()]);
}

#[test]
fn urls_give_the_server_zone_and_key() {
    let s = Server::from_url("dns://lab-key:%2B%2F%2B%2BAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxw%3D@127.0.0.1:5353/lab.example").unwrap();
    assert_eq!(s.addr.to_string(), "127.0.0.1:5353");
    assert_eq!(s.zone.to_string(), "lab.example.");
    for (url, expect) in [
        ("dns://host.example:53/z", "is not an IP address"),
        ("dns://127.0.0.1:53/", "names no zone"),
        ("dns://k:not*base64@127.0.0.1/z", "is not base64"),
        ("dns://k:c2VjcmV0@127.0.0.1/z?algorithm=hmac-md5", "`hmac-md5` is not supported"),
        ("dns://:c2VjcmV0@127.0.0.1/z", "needs both a name and a secret"),
        ("http://127.0.0.1/z", "needs a dns:// URL"),
    ] {
        let e = Server::from_url(url).err().unwrap_or_else(|| panic!("{url} parsed"));
        assert!(e.contains(expect), "{url}: {e}");
    }
}

#[test]
fn names_are_made_absolute_inside_the_zone() {
    let zone = Name::from_ascii("lab.example.").unwrap();
    assert_eq!(records::absolute("db", &zone).unwrap().to_string(), "db.lab.example.");
    assert_eq!(records::absolute("@", &zone).unwrap().to_string(), "lab.example.");
    assert_eq!(records::absolute("DB.Lab.Example.", &zone).unwrap().to_string(), "db.lab.example.");
    let e = records::absolute("db.other.example.", &zone).unwrap_err();
    assert!(e.contains("is not in zone lab.example."), "{e}");
}

#[test]
fn set_and_delete_are_undone_by_restoring_the_previous_rrset() {
    let set =
        parse("action: set\nconnection: dns\nname: db\ntype: A\nrecords: [127.0.0.2]\n").unwrap();
    assert!(set.reversible());
    assert!(!parse("action: get\nconnection: dns\nname: db\ntype: A\n").unwrap().reversible());
    let outputs = json!({
        "name": "db.lab.example.", "changed": true,
        "previous": {"records": ["127.0.0.1"], "ttl": 60},
    });
    let ActionConfig::Dns(back) = set.inverse(&outputs).unwrap() else { panic!() };
    assert_eq!(back.action, Action::Set);
    assert_eq!(back.name, "db.lab.example.");
    assert_eq!(back.records, Some(vec!["127.0.0.1".to_string()]));
    assert_eq!(back.ttl, Some(60));
    assert_eq!(back.connection.as_deref(), Some("dns"));
    let created = json!({"name": "db.lab.example.", "changed": true, "previous": {"records": [], "ttl": null}});
    let ActionConfig::Dns(back) = set.inverse(&created).unwrap() else { panic!() };
    assert_eq!(back.action, Action::Delete);
    let same = json!({"name": "db.lab.example.", "changed": false, "previous": {"records": ["127.0.0.2"]}});
    assert!(matches!(set.inverse(&same).unwrap(), ActionConfig::Set(_)));
    assert!(set.inverse(&json!({})).unwrap_err().contains("`changed`"));
}
