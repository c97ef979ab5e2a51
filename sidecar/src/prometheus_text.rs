//! The Prometheus text format (0.0.4) made from prometheus-client's
//! OpenMetrics output, for scrapers that do not ask for OpenMetrics (curl,
//! `promtool check metrics`, older agents). The two differ where counters
//! are named: OpenMetrics names the family `x` and its sample `x_total`;
//! the text format wants `# HELP x_total` and `# TYPE x_total counter`
//! over the sample. It also has no `# UNIT`, `_created` or `# EOF`.
//!
//! What it is not: a parser. The input is prometheus-client's own output,
//! one line per item; anything it does not know is passed through.

use std::collections::HashSet;

/// `openmetrics` in the Prometheus text format.
pub(crate) fn from_openmetrics(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((prefix, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) {
                out.push_str(&format!("{prefix}{name}_total {tail}"));
                out.push('\n');
                continue;
            }
        } else {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            if name
                .strip_suffix("_created")
                .is_some_and(|family| counters.contains(family))
            {
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Whether an `Accept` header asks for OpenMetrics.
pub(crate) fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_renamed_and_openmetrics_only_lines_dropped() {
        let openmetrics = "\
# HELP spillway_jobs Jobs by outcome.
# TYPE spillway_jobs counter
spillway_jobs_total{outcome=\"ok\"} 3
spillway_jobs_created{outcome=\"ok\"} 1700000000.0
# HELP spillway_queue_depth Jobs waiting.
# TYPE spillway_queue_depth gauge
spillway_queue_depth 2
# HELP spillway_job_latency_seconds Latency.
# TYPE spillway_job_latency_seconds histogram
# UNIT spillway_job_latency_seconds seconds
spillway_job_latency_seconds_bucket{le=\"+Inf\"} 3
spillway_job_latency_seconds_count 3
# EOF
";
        let text = "\
# HELP spillway_jobs_total Jobs by outcome.
# TYPE spillway_jobs_total counter
spillway_jobs_total{outcome=\"ok\"} 3
# HELP spillway_queue_depth Jobs waiting.
# TYPE spillway_queue_depth gauge
spillway_queue_depth 2
# HELP spillway_job_latency_seconds Latency.
# TYPE spillway_job_latency_seconds histogram
spillway_job_latency_seconds_bucket{le=\"+Inf\"} 3
spillway_job_latency_seconds_count 3
";
        assert_eq!(from_openmetrics(openmetrics), text);
    }

    #[test]
    fn openmetrics_is_served_to_those_who_ask_for_it() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        for (accept, wanted) in [
            (Some(prometheus), true),
            (Some("text/plain"), false),
            (Some("*/*"), false),
            (None, false),
        ] {
            assert_eq!(wants_openmetrics(accept), wanted, "{accept:?}");
        }
    }
}
