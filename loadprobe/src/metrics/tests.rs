use std::sync::Arc;

use super::*;
use crate::probe::track::TwSideStats;

fn scrape(snapshot: Snapshot) -> String {
    let published = Arc::new(Published::default());
    published.set(snapshot);
    render(&registry(published)).expect("encodes")
}

fn line<'a>(text: &'a str, series: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

#[test]
fn totals_become_labelled_series_and_a_cumulative_histogram() {
    let mut client = TwSideStats {
        entered: 5,
        current: 2,
        expired: 1,
        killed: 2,
        ..TwSideStats::default()
    };
    for ms in [3, 60_200, 61_500] {
        client.durations_ms.0.record(ms).unwrap();
    }
    let mut snapshot = Snapshot {
        lost_events: 7,
        timewait_tracked: true,
        ..Snapshot::default()
    };
    snapshot.totals.closer.insert(Closer::Client, 5);
    snapshot.totals.time_wait.insert(Side::Client, client);
    let fin_wait2 = TwSideStats {
        current: 3,
        ..TwSideStats::default()
    };
    snapshot.totals.fin_wait2.insert(Side::Client, fin_wait2);
    let text = scrape(snapshot);
    assert_eq!(
        line(
            &text,
            "loadprobe_connections_closed_total{closer=\"client\"}"
        ),
        "5"
    );
    assert_eq!(
        line(
            &text,
            "loadprobe_connections_closed_total{closer=\"refused\"}"
        ),
        "0"
    );
    assert_eq!(line(&text, "loadprobe_lost_events_total"), "7");
    assert_eq!(
        line(&text, "loadprobe_time_wait_entered_total{side=\"client\"}"),
        "5"
    );
    assert_eq!(
        line(
            &text,
            "loadprobe_time_wait_ended_total{side=\"client\",reason=\"killed\"}"
        ),
        "2"
    );
    assert_eq!(
        line(
            &text,
            "loadprobe_time_wait_alive{side=\"client\",substate=\"FIN_WAIT2\"}"
        ),
        "3"
    );
    assert_eq!(
        line(
            &text,
            "loadprobe_time_wait_alive{side=\"client\",substate=\"TIME_WAIT\"}"
        ),
        "2"
    );
    assert_eq!(
        line(
            &text,
            "loadprobe_time_wait_alive{side=\"server\",substate=\"TIME_WAIT\"}"
        ),
        "0"
    );
    let bucket = |le: &str| {
        line(
            &text,
            &format!("loadprobe_time_wait_lifetime_seconds_bucket{{le=\"{le}\",side=\"client\"}}"),
        )
    };
    assert_eq!(bucket("0.01"), "1");
    assert_eq!(bucket("60.0"), "1");
    assert_eq!(bucket("61.0"), "2");
    assert_eq!(bucket("62.0"), "3");
    assert_eq!(bucket("+Inf"), "3");
    assert_eq!(
        line(
            &text,
            "loadprobe_time_wait_lifetime_seconds_count{side=\"client\"}"
        ),
        "3"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[test]
fn without_timewait_tracking_there_are_no_timewait_series() {
    let text = scrape(Snapshot::default());
    assert!(
        text.contains("loadprobe_connections_closed_total"),
        "{text}"
    );
    assert!(!text.contains("time_wait"), "{text}");
}

#[test]
fn owner_series_have_one_label_value_per_row_and_other() {
    use crate::probe::track::by::Row;
    let row = |entered, holding| Row {
        entered,
        holding,
        connections: entered,
        closer: [(Closer::Client, entered)].into_iter().collect(),
    };
    let mut owners = OwnerSeries {
        label: "process",
        other: row(7, 1),
        ..OwnerSeries::default()
    };
    owners.rows.insert("curl[10]".into(), row(2, 2));
    let text = scrape(Snapshot {
        timewait_tracked: true,
        owners: Some(owners),
        ..Snapshot::default()
    });
    let get = |s: &str| line(&text, s);
    assert_eq!(
        get("loadprobe_owner_time_wait_entered_total{process=\"curl[10]\"}"),
        "2"
    );
    assert_eq!(
        get("loadprobe_owner_time_wait_entered_total{process=\"other\"}"),
        "7"
    );
    assert_eq!(
        get("loadprobe_owner_time_wait_alive{process=\"other\"}"),
        "1"
    );
    assert_eq!(
        get("loadprobe_owner_connections_closed_total{process=\"curl[10]\",closer=\"client\"}"),
        "2"
    );
    assert_eq!(
        get("loadprobe_owner_connections_closed_total{process=\"other\",closer=\"server\"}"),
        "0"
    );
    assert_eq!(
        text.matches("loadprobe_owner_time_wait_alive{").count(),
        2,
        "{text}"
    );
}
