//! `spillway host --executors`: which node processes a host runs. Pure:
//! [`parse`] reads the flag, [`plan`] turns it, `--gpus` and the GPUs the
//! host has into one [`Planned`] executor each; `serve` spawns them.
//!
//! - `one` (the default): one node with every GPU of `--gpus`. A GPU
//!   fault ends every job on the host.
//! - `per-gpu`: one node per GPU of `--gpus` (one on the CPU backend where
//!   there is none). A GPU fault ends only that GPU's jobs; each node
//!   costs its own memory and its own CUDA contexts.
//! - a list, such as `0,1`, `0,0,cpu` or `0,1:acme+beta`: one node per
//!   item, on that GPU (`cpu`: none). `:TENANTS` keeps the executor for
//!   those tenants (their kernel packs then share a context with no other
//!   tenant's memory); they run nowhere else, and no other tenant runs
//!   there. Two items naming one GPU give it two processes (a test stands
//!   in for two GPUs that way).

use spillway_proto::TenantId;

/// The flag as given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum ExecutorsSpec {
    #[default]
    One,
    PerGpu,
    List(Vec<Item>),
}

/// One item of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Item {
    /// `None`: the CPU backend only.
    pub(crate) gpu: Option<usize>,
    pub(crate) confined_to: Vec<TenantId>,
}

/// One executor to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Planned {
    /// `0`, `1`, …: its socket, folder and name in `/v1/cluster`.
    pub(crate) name: String,
    /// Its `--gpus`: `None` every GPU, else these ordinals (empty: none).
    pub(crate) gpus: Option<Vec<usize>>,
    pub(crate) confined_to: Vec<TenantId>,
}

/// Reads `--executors`.
pub(crate) fn parse(s: &str) -> Result<ExecutorsSpec, String> {
    match s.trim() {
        "one" => return Ok(ExecutorsSpec::One),
        "per-gpu" => return Ok(ExecutorsSpec::PerGpu),
        _ => {}
    }
    let items = s
        .split(',')
        .map(|item| {
            let (gpu, tenants) = match item.trim().split_once(':') {
                Some((gpu, tenants)) => (gpu, Some(tenants)),
                None => (item.trim(), None),
            };
            let gpu = match gpu {
                "cpu" => None,
                n => Some(n.parse::<usize>().map_err(|_| {
                    format!("an executor is `one`, `per-gpu`, or a list of GPU ordinals or `cpu`, each with an optional `:tenant+tenant`; got {item:?}")
                })?),
            };
            let confined_to = match tenants {
                None => Vec::new(),
                Some(list) => tenants_of(list, item)?,
            };
            Ok(Item { gpu, confined_to })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(ExecutorsSpec::List(items))
}

/// `acme+beta`: tenant names, checked (`item` names where in errors).
fn tenants_of(list: &str, item: &str) -> Result<Vec<TenantId>, String> {
    list.split('+')
        .map(|t| match spillway_sidecar::valid_name(t) {
            true => Ok(TenantId(t.to_owned())),
            false => Err(format!("not a tenant name: {t:?} in {item:?}")),
        })
        .collect()
}

/// Reads `spillway sidecar --keep-executor N=TENANT+TENANT`: the executor
/// of the `N`th `--node-socket` (from 0) is kept for those tenants.
pub(crate) fn parse_kept(s: &str) -> Result<(usize, Vec<TenantId>), String> {
    let Some((n, tenants)) = s.split_once('=') else {
        return Err(format!(
            "a kept executor is N=TENANT+TENANT (N: which --node-socket, from 0); got {s:?}"
        ));
    };
    let n = n.trim().parse::<usize>().map_err(|_| {
        format!("a kept executor's N is which --node-socket (0, 1, …); got {n:?} in {s:?}")
    })?;
    Ok((n, tenants_of(tenants.trim(), s)?))
}

impl std::fmt::Display for ExecutorsSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExecutorsSpec::One => f.write_str("one"),
            ExecutorsSpec::PerGpu => f.write_str("per-gpu"),
            ExecutorsSpec::List(items) => {
                let items: Vec<String> = (items.iter())
                    .map(|i| {
                        let gpu = i.gpu.map_or_else(|| "cpu".to_owned(), |g| g.to_string());
                        match i.confined_to.is_empty() {
                            true => gpu,
                            false => {
                                let tenants: Vec<&str> =
                                    i.confined_to.iter().map(|t| t.0.as_str()).collect();
                                format!("{gpu}:{}", tenants.join("+"))
                            }
                        }
                    })
                    .collect();
                f.write_str(&items.join(","))
            }
        }
    }
}

/// The executors `spec` asks for, given `--gpus` (`None`: all) and, for
/// `per-gpu`, how many GPUs the host has (asked only then).
pub(crate) fn plan(
    spec: &ExecutorsSpec,
    gpus: &Option<Vec<usize>>,
    gpu_count: impl FnOnce() -> usize,
) -> Result<Vec<Planned>, String> {
    let planned = |i: usize, gpus, confined_to| Planned {
        name: i.to_string(),
        gpus,
        confined_to,
    };
    match spec {
        ExecutorsSpec::One => Ok(vec![planned(0, gpus.clone(), Vec::new())]),
        ExecutorsSpec::PerGpu => {
            let ordinals = match gpus {
                Some(list) => list.clone(),
                None => (0..gpu_count()).collect(),
            };
            if ordinals.is_empty() {
                return Ok(vec![planned(0, Some(Vec::new()), Vec::new())]);
            }
            Ok((ordinals.into_iter().enumerate())
                .map(|(i, gpu)| planned(i, Some(vec![gpu]), Vec::new()))
                .collect())
        }
        ExecutorsSpec::List(items) => {
            if gpus.is_some() {
                return Err(
                    "--gpus and an --executors list both choose GPUs: give one of them".into(),
                );
            }
            if items.len() > 64 {
                return Err(format!("at most 64 executors, got {}", items.len()));
            }
            Ok((items.iter().enumerate())
                .map(|(i, item)| {
                    planned(
                        i,
                        Some(item.gpu.into_iter().collect()),
                        item.confined_to.clone(),
                    )
                })
                .collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> TenantId {
        TenantId(name.to_owned())
    }

    #[test]
    fn a_kept_executor_names_its_socket_and_tenants() {
        assert_eq!(parse_kept("1=acme"), Ok((1, vec![t("acme")])));
        assert_eq!(
            parse_kept("0 = acme+beta"),
            Ok((0, vec![t("acme"), t("beta")]))
        );
        for bad in ["acme", "x=acme", "1=", "1=Acme", "-1=acme"] {
            assert!(parse_kept(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_flag_reads_and_prints_back() {
        for ok in [
            "one",
            "per-gpu",
            "0",
            "0,1",
            "0,0,cpu",
            "0,1:acme+beta",
            "cpu:x",
        ] {
            let spec = parse(ok).unwrap();
            assert_eq!(spec.to_string(), ok);
        }
        let item = |gpu, confined_to| Item { gpu, confined_to };
        assert_eq!(
            parse("1, cpu:acme").unwrap(),
            ExecutorsSpec::List(vec![item(Some(1), vec![]), item(None, vec![t("acme")])])
        );
        for bad in ["", "two", "0,,1", "-1", "0:", "0:Acme", "0:a+", "gpu0"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn each_spec_plans_its_executors() {
        let p = |name: &str, gpus: Option<Vec<usize>>, confined: &[&str]| Planned {
            name: name.into(),
            gpus,
            confined_to: confined.iter().map(|c| t(c)).collect(),
        };
        let no_count = || panic!("the GPUs are counted only for per-gpu over all of them");
        // (flag, --gpus, GPUs the host has, the executors planned)
        type Case = (
            &'static str,
            Option<Vec<usize>>,
            usize,
            Result<Vec<Planned>, ()>,
        );
        let table: Vec<Case> = vec![
            ("one", None, 8, Ok(vec![p("0", None, &[])])),
            (
                "one",
                Some(vec![1]),
                8,
                Ok(vec![p("0", Some(vec![1]), &[])]),
            ),
            (
                "per-gpu",
                None,
                2,
                Ok(vec![p("0", Some(vec![0]), &[]), p("1", Some(vec![1]), &[])]),
            ),
            (
                "per-gpu",
                Some(vec![3, 5]),
                8,
                Ok(vec![p("0", Some(vec![3]), &[]), p("1", Some(vec![5]), &[])]),
            ),
            ("per-gpu", None, 0, Ok(vec![p("0", Some(vec![]), &[])])),
            (
                "0,0,cpu:acme",
                None,
                1,
                Ok(vec![
                    p("0", Some(vec![0]), &[]),
                    p("1", Some(vec![0]), &[]),
                    p("2", Some(vec![]), &["acme"]),
                ]),
            ),
            ("0,1", Some(vec![0]), 2, Err(())),
        ];
        for (flag, gpus, count, want) in table {
            let spec = parse(flag).unwrap();
            let counted = spec == ExecutorsSpec::PerGpu && gpus.is_none();
            let got = match counted {
                true => plan(&spec, &gpus, || count),
                false => plan(&spec, &gpus, no_count),
            };
            assert_eq!(got.map_err(|_| ()), want, "{flag} with --gpus {gpus:?}");
        }
    }
}
