use super::*;

#[test]
fn parses_command_stats() {
    let info = "# Commandstats\r\n\
        cmdstat_evalsha:calls=12,usec=345,usec_per_call=28.75,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_config|resetstat:calls=1,usec=2,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r\n";
    assert_eq!(
        parse_command_stats(info),
        vec![
            CommandStat {
                name: "evalsha".into(),
                calls: 12,
                usec: 345
            },
            CommandStat {
                name: "config|resetstat".into(),
                calls: 1,
                usec: 2
            },
        ]
    );
}
