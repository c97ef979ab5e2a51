//! A private network for a run: one Linux network namespace per host,
//! each joined by a veth pair to a bridge in the harness's own namespace,
//! and partitions made of blackhole routes inside the namespaces.
//!
//! Needs root (and `ip` from iproute2). The bridge carries an address too,
//! so the harness (the client) reaches every host even while hosts cannot
//! reach each other: a partition cuts host from host, never client from
//! host. Everything is removed when the [`NetLab`] drops.

use std::net::Ipv4Addr;
use std::process::Command;

/// Something `ip` refused.
#[derive(Debug, thiserror::Error)]
#[error("`ip {args}` failed: {why}")]
pub struct NetError {
    args: String,
    why: String,
}

/// The namespaces, veths and bridge of one run.
#[derive(Debug)]
pub struct NetLab {
    tag: String,
    subnet: u8,
    hosts: usize,
    /// Blackhole routes in place: (namespace host, destination host).
    cuts: Vec<(usize, usize)>,
}

impl NetLab {
    /// Whether this process may build one (root, and `ip netns` works).
    pub fn available() -> Result<(), String> {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let root = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0");
        if !root {
            return Err("network namespaces need root".into());
        }
        match Command::new("ip").args(["netns", "list"]).output() {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!(
                "`ip netns list` failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!("`ip` (iproute2) is not usable: {e}")),
        }
    }

    /// Builds `hosts` namespaces on a subnet no other run on this machine
    /// is using, trying from `first` on.
    pub fn build_free(first: u8, hosts: usize) -> Result<Self, NetError> {
        let taken = |subnet: u8| {
            let tag = format!("swc{subnet}");
            std::path::Path::new(&format!("/sys/class/net/{tag}br")).exists()
                || std::path::Path::new(&format!("/run/netns/{tag}h1")).exists()
        };
        let subnet = (0..250u8)
            .map(|i| ((u16::from(first) + u16::from(i)) % 250) as u8)
            .find(|s| !taken(*s))
            .ok_or_else(|| NetError {
                args: "link".into(),
                why: "every chaos subnet 10.213.0-249.0/24 is in use".into(),
            })?;
        Self::build(subnet, hosts)
    }

    /// Builds `hosts` namespaces on the subnet 10.213.`subnet`.0/24 (host
    /// `i` at .`i+1`, the bridge at .254). `subnet` also names everything,
    /// so runs on different subnets never collide.
    fn build(subnet: u8, hosts: usize) -> Result<Self, NetError> {
        let lab = Self {
            tag: format!("swc{subnet}"),
            subnet,
            hosts,
            cuts: Vec::new(),
        };
        let bridge = lab.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", lab.bridge_addr()),
            "dev",
            &bridge,
        ])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 0..hosts {
            let (ns, veth) = (lab.namespace(i), lab.veth(i));
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &veth, "master", &bridge, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", lab.addr(i)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(lab)
    }

    /// Host `i`'s namespace.
    pub fn namespace(&self, i: usize) -> String {
        format!("{}h{}", self.tag, i + 1)
    }

    /// Host `i`'s address.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, i as u8 + 1)
    }

    fn bridge_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, 254)
    }

    fn bridge(&self) -> String {
        format!("{}br", self.tag)
    }

    fn veth(&self, i: usize) -> String {
        format!("{}v{}", self.tag, i + 1)
    }

    /// Drops what host `from` sends to host `to`.
    pub fn cut(&mut self, from: usize, to: usize) -> Result<(), NetError> {
        if self.cuts.contains(&(from, to)) {
            return Ok(());
        }
        let dest = format!("{}/32", self.addr(to));
        ip(&[
            "-n",
            &self.namespace(from),
            "route",
            "add",
            "blackhole",
            &dest,
        ])?;
        self.cuts.push((from, to));
        Ok(())
    }

    /// Cuts host `i` off from every other host, both ways.
    pub fn isolate(&mut self, i: usize) -> Result<(), NetError> {
        for other in (0..self.hosts).filter(|o| *o != i) {
            self.cut(i, other)?;
            self.cut(other, i)?;
        }
        Ok(())
    }

    /// Splits the hosts in two: `side` and the rest cannot reach each
    /// other (both ways); hosts on the same side still can.
    pub fn split(&mut self, side: &[usize]) -> Result<(), NetError> {
        for a in side.iter().copied() {
            for b in (0..self.hosts).filter(|b| !side.contains(b)) {
                self.cut(a, b)?;
                self.cut(b, a)?;
            }
        }
        Ok(())
    }

    /// Removes every cut.
    pub fn heal(&mut self) -> Result<(), NetError> {
        for (from, to) in std::mem::take(&mut self.cuts) {
            let dest = format!("{}/32", self.addr(to));
            ip(&[
                "-n",
                &self.namespace(from),
                "route",
                "del",
                "blackhole",
                &dest,
            ])?;
        }
        Ok(())
    }

    /// The `ip netns exec` prefix that runs a program as host `i`.
    pub fn exec_prefix(&self, i: usize) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.namespace(i),
        ]
    }

    fn teardown(&self) {
        for i in 0..self.hosts {
            // Deleting the namespace deletes its end of the veth, and with
            // it the pair.
            let _ = ip(&["netns", "del", &self.namespace(i)]);
            let _ = ip(&["link", "del", &self.veth(i)]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn ip(args: &[&str]) -> Result<(), NetError> {
    let failed = |why: String| NetError {
        args: args.join(" "),
        why,
    };
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| failed(e.to_string()))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(failed(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        )),
    }
}
