//! Parsing and compile checks of `haproxy`'s `with`, `show stat` and
//! `get weight`, and the inverse of a change. Runs against a real HAProxy
//! are in the e2e suite (tests/lab.rs).

use super::*;
use crate::ActionConfig;

fn parse(yaml: &str) -> Result<Config, String> {
    serde_saphyr::from_str(yaml).map_err(|e| e.to_string())
}

fn problems(yaml: &str) -> Vec<(Vec<String>, String)> {
    parse(yaml).unwrap().compile().into_iter().map(|p| (p.path, p.message)).collect()
}

#[test]
fn every_action_parses_with_its_fields() {
    for yaml in [
        "action: servers\nconnection: lb\nbackend: pg\n",
        "action: set_weight\nconnection: lb\nbackend: pg\nserver: pg2\nweight: 100\n",
        "action: set_state\nurl: unix:///run/haproxy/admin.sock\nbackend: pg\nserver: pg1\nstate: maint\n",
        "action: set_state\nurl: tcp://127.0.0.1:9999\nbackend: pg\nserver: pg1\nstate: drain\n",
    ] {
        let c = parse(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
        assert_eq!(c.compile(), vec![], "{yaml}");
    }
}

#[test]
fn missing_stray_and_hostile_fields_are_named() {
    let e = parse("action: set_state\nconnection: lb\nbackend: pg\nserver: a\nstate: down\n")
        .unwrap_err();
    assert!(e.contains("unknown variant `down`"), "{e}");
    assert_eq!(
        problems("action: set_weight\nconnection: lb\nbackend: pg\nserver: a\n"),
        vec![(vec!["weight".into()], "`set_weight` needs `weight`".into())]
    );
    assert_eq!(
        problems("action: set_weight\nconnection: lb\nbackend: pg\nserver: a\nweight: 300\n"),
        vec![(vec!["weight".into()], "a weight is 0 to 256, not 300".into())]
    );
    assert_eq!(
        problems("action: servers\nconnection: lb\nbackend: pg\nstate: ready\n"),
        vec![(vec!["state".into()], "`state` does not apply to action `servers`".into())]
    );
    // A name reaches a command line: `;` would start another command.
    let p = problems(
        "action: set_state\nconnection: lb\nbackend: pg\nserver: 'a;shutdown sessions'\nstate: ready\n",
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].0, vec!["server".to_string()]);
    assert!(p[0].1.contains("has `;`"), "{p:?}");
    assert!(check_name("server", "a;b").unwrap_err().contains("has `;`"));
    assert!(check_name("server", "a\nb").unwrap_err().contains("has `\\n`"));
    let p = problems("action: servers\nurl: http://x/\nbackend: pg\n");
    assert_eq!(p[0].0, vec!["url".to_string()]);
}

const STAT: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,addr\n\
pg,FRONTEND,,,0,1,2000,3,0,0,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,0,0,1,,,,,\n\
pg_servers,pg1,0,0,1,1,,3,0,0,,0,,0,0,0,0,UP,100,1,0,0,0,10,0,,1,3,1,,3,,2,0,,1,L4OK,,0,,127.0.0.1:5432\n\
pg_servers,pg2,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT,0,1,0,0,0,10,10,,1,3,2,,0,,2,0,,0,,,,,127.0.0.2:5433\n\
pg_servers,BACKEND,0,0,1,1,200,3,0,0,0,0,,0,0,0,0,UP,100,1,0,,0,10,0,,1,3,0,,3,,1,0,,1,,,,,\n";

#[test]
fn show_stat_gives_each_server_of_the_backend() {
    let (servers, backends) = parse_stat(STAT, "pg_servers").unwrap();
    assert_eq!(backends, vec!["pg_servers".to_string()]);
    assert_eq!(servers.len(), 2);
    assert_eq!(
        servers[0],
        json!({"name": "pg1", "address": "127.0.0.1:5432", "status": "UP", "state": "ready",
               "weight": 100, "check_status": "L4OK", "sessions": 1})
    );
    assert_eq!(servers[1]["state"], "maint");
    assert_eq!(parse_stat(STAT, "other").unwrap().0, Vec::<Value>::new());
    assert!(parse_stat("Unknown command\n", "pg").is_err());
    assert_eq!(parse_weight("100 (initial 100)\n"), Some(100));
    assert_eq!(parse_weight("No such server.\n"), None);
}

#[test]
fn changes_are_undone_by_their_previous_value() {
    let c = parse("action: set_weight\nconnection: lb\nbackend: pg\nserver: pg2\nweight: 100\n")
        .unwrap();
    let ActionConfig::Haproxy(back) =
        c.inverse(&json!({"changed": true, "previous_weight": 0})).unwrap()
    else {
        panic!()
    };
    assert_eq!((back.weight, back.server.as_deref()), (Some(0), Some("pg2")));
    let s = parse("action: set_state\nconnection: lb\nbackend: pg\nserver: pg1\nstate: maint\n")
        .unwrap();
    let ActionConfig::Haproxy(back) =
        s.inverse(&json!({"changed": true, "previous_state": "ready"})).unwrap()
    else {
        panic!()
    };
    assert_eq!(back.state, Some(State::Ready));
    assert!(matches!(s.inverse(&json!({"changed": false})).unwrap(), ActionConfig::Set(_)));
    assert!(!parse("action: servers\nconnection: lb\nbackend: pg\n").unwrap().reversible());
}
