//! deploy/kubernetes: the manifests against the Kubernetes schemas (kubernetes-validate, which
//! ships them: no cluster, no network), and the DaemonSet's capability list as the whole
//! privilege of a real `trace --all-netns --metrics`.

// A test binary sees every dependency of the package, whichever it uses.
#![allow(unused_crate_dependencies)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use loadprobe_tests::{Netns, Tracer, V4, client_first_close, require_root, scrape, tempdir};

fn manifest(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/kubernetes")
        .join(name)
}

fn validate(file: &std::path::Path) -> (bool, String) {
    let out = Command::new("kubernetes-validate")
        .arg("--strict")
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("kubernetes-validate: {e} (installed by `cargo xtask setup`)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every resource of daemonset.yaml passes the strict schema check, and the check does fail on
/// a field Kubernetes does not know.
#[test]
fn daemonset_passes_the_kubernetes_schemas() {
    let file = manifest("daemonset.yaml");
    let (ok, text) = validate(&file);
    assert!(ok, "{text}");
    for resource in [
        "namespace/loadprobe",
        "daemonset/loadprobe-trace",
        "service/loadprobe-trace",
    ] {
        assert!(
            text.contains(&format!("passed for resource {resource}")),
            "{resource}: {text}"
        );
    }
    let dir = tempdir("deploy-broken");
    let broken = dir.join("daemonset.yaml");
    let yaml = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &broken,
        yaml.replace("readOnlyRootFilesystem", "readOnlyRootFilesytem"),
    )
    .unwrap();
    let (ok, text) = validate(&broken);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!ok && text.contains("readOnlyRootFilesytem"), "{text}");
}

/// The capabilities the DaemonSet adds, as capability(7) names for setpriv.
fn daemonset_capabilities() -> Vec<String> {
    let yaml = std::fs::read_to_string(manifest("daemonset.yaml")).unwrap();
    let line = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("add: ["))
        .expect("capabilities: add: [...]");
    line.trim_end_matches(']')
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_lowercase())
        .collect()
}

/// With exactly the DaemonSet's capabilities (as its bounding set, so root has no other),
/// `trace --all-netns` attaches with TIME_WAIT tracking, drops to nobody with nothing left, and
/// counts a connection made in another namespace.
#[test]
fn daemonset_capabilities_are_enough_for_trace_all_netns() {
    if !require_root("the DaemonSet's capabilities") {
        return;
    }
    let caps = daemonset_capabilities();
    assert!(caps.contains(&"bpf".to_string()), "{caps:?}");
    let bounding = format!("--bounding-set=-all,+{}", caps.join(",+"));
    let addr: SocketAddr = "127.0.0.1:9465".parse().unwrap();
    // The tracer runs in one namespace, the connection is made in another.
    let here = Netns::for_test("deploy-trace");
    let tracer = Tracer::start_under(
        here.name(),
        &["setpriv", &bounding, "--inh-caps=-all", "--"],
        &[8140],
        &["--all-netns", "--metrics", "127.0.0.1:9465"],
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", tracer.pid())).unwrap();
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    assert!(
        status.contains("Uid:\t65534\t65534\t65534\t65534"),
        "{status}"
    );
    let other = Netns::for_test("deploy-caps");
    let made = client_first_close(&other, V4, 8140);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = scrape(&here, addr);
        if s.get("loadprobe_time_wait_entered_total{side=\"client\"}") == Some(&(made.len() as f64))
        {
            break;
        }
        assert!(Instant::now() < deadline, "{s:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let trace = tracer.stop();
    assert!(!trace.stderr.contains("unavailable"), "{}", trace.stderr);
    assert_eq!(
        trace.summary["time_wait"]["client"]["entered"],
        made.len() as u64
    );
}

/// The overlay (or base) `dir` under deploy/kubernetes/job, rendered as kustomize renders the
/// features these files use (resources, a ConfigMap generator without hash suffixes, merged
/// literals, JSON 6902 patches), by a short script: PyYAML comes with kubernetes-validate, and
/// no kubectl is needed. Where kubectl is installed, its own `kustomize` must render the same.
fn render(dir: &str) -> serde_json::Value {
    const SCRIPT: &str = r#"
import json, os, sys, yaml
def build(d):
    k = yaml.safe_load(open(os.path.join(d, "kustomization.yaml")))
    known = {"apiVersion", "kind", "resources", "generatorOptions", "configMapGenerator", "patches"}
    assert set(k) <= known, f"kustomization fields this renderer does not know: {set(k) - known}"
    docs = []
    for r in k.get("resources", []):
        p = os.path.join(d, r)
        docs += build(p) if os.path.isdir(p) else [x for x in yaml.safe_load_all(open(p)) if x]
    if "configMapGenerator" in k:
        assert k.get("generatorOptions", {}).get("disableNameSuffixHash") or any(
            g.get("behavior") == "merge" for g in k["configMapGenerator"])
    for g in k.get("configMapGenerator", []):
        lit = dict(l.split("=", 1) for l in g.get("literals", []))
        cm = [x for x in docs if x["kind"] == "ConfigMap" and x["metadata"]["name"] == g["name"]]
        if g.get("behavior", "create") == "merge":
            cm[0]["data"].update(lit)
        else:
            assert not cm, g["name"]
            docs.append({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": g["name"]}, "data": lit})
    for p in k.get("patches", []):
        t = p["target"]
        for x in docs:
            if x["kind"] == t["kind"] and x["metadata"]["name"] == t["name"]:
                for op in yaml.safe_load(p["patch"]):
                    assert op["op"] in ("replace", "add"), op
                    *parents, last = op["path"].strip("/").split("/")
                    o = x
                    for key in parents:
                        o = o[int(key)] if isinstance(o, list) else o[key]
                    o[last] = op["value"]
    return docs
print(json.dumps(build(sys.argv[1])))
"#;
    let path = manifest("job").join(dir);
    let out = Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(&path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "render {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // In kustomize's order of kinds (ConfigMap before Job): sorted by kind, then name.
    let sorted = |mut docs: Vec<serde_json::Value>| {
        docs.sort_by_key(|d| (d["kind"].to_string(), d["metadata"]["name"].to_string()));
        serde_json::Value::Array(docs)
    };
    let ours = sorted(serde_json::from_slice(&out.stdout).expect("rendered JSON"));
    if let Ok(k) = Command::new("kubectl").arg("kustomize").arg(&path).output() {
        if k.status.success() {
            let script = "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))";
            let mut py = Command::new("python3")
                .args(["-c", script])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("python3");
            use std::io::Write;
            py.stdin.take().unwrap().write_all(&k.stdout).unwrap();
            let theirs =
                sorted(serde_json::from_slice(&py.wait_with_output().unwrap().stdout).unwrap());
            assert_eq!(
                ours, theirs,
                "this renderer and kubectl kustomize differ on {dir}"
            );
        }
    }
    ours
}

/// The Indexed Job, base and example overlay, rendered and checked against the Kubernetes
/// schemas; in both, completions = parallelism = SEGMENTS, every `$(VAR)` of the arguments is
/// one the ConfigMap defines, and each pod runs its segment from its index, at START_AT, with
/// its record on stdout.
#[test]
fn the_indexed_job_renders_and_passes_the_kubernetes_schemas() {
    for dir in ["base", "overlays/example"] {
        let docs = render(dir);
        let docs = docs.as_array().unwrap();
        let file = tempdir("deploy-job").join("rendered.json");
        // JSON is YAML: one document per resource, as kubernetes-validate reads them.
        let text: Vec<String> = docs.iter().map(|d| d.to_string()).collect();
        std::fs::write(&file, text.join("\n---\n")).unwrap();
        let (ok, out) = validate(&file);
        std::fs::remove_dir_all(file.parent().unwrap()).unwrap();
        assert!(ok, "{dir}: {out}");
        for resource in ["configmap/loadprobe-load", "job/loadprobe-load"] {
            assert!(
                out.contains(&format!("passed for resource {resource}")),
                "{dir}: {out}"
            );
        }
        let of = |kind: &str| docs.iter().find(|d| d["kind"] == kind).expect(kind);
        let (job, data) = (of("Job"), &of("ConfigMap")["data"]);
        let segments: u64 = data["SEGMENTS"].as_str().unwrap().parse().unwrap();
        assert_eq!(job["spec"]["completionMode"], "Indexed");
        assert_eq!(job["spec"]["completions"], segments, "{dir}");
        assert_eq!(job["spec"]["parallelism"], segments, "{dir}");
        let container = &job["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<&str> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        for arg in [
            "run",
            "--segments=$(SEGMENTS)",
            "--start-at=$(START_AT)",
            "--output=-",
        ] {
            assert!(args.contains(&arg), "{dir}: {args:?}");
        }
        for arg in &args {
            if let Some((_, var)) = arg.split_once("$(") {
                let var = var.trim_end_matches(')');
                assert!(
                    data.get(var).is_some(),
                    "{dir}: {arg} but no {var} in {data}"
                );
            }
        }
        let caps = &container["securityContext"]["capabilities"];
        assert_eq!(
            caps["add"],
            serde_json::json!(["BPF", "PERFMON", "SYSLOG"]),
            "{dir}"
        );
    }
}

/// With exactly the Job's capabilities (its bounding set), a pod's `run --segments` attaches the
/// probe with its TIME_WAIT tracking and counts its own connections' closers; the record says
/// it is the segment of its JOB_COMPLETION_INDEX.
#[test]
fn the_jobs_capabilities_are_enough_for_a_segment_with_the_probe() {
    if !require_root("the Job's capabilities") {
        return;
    }
    let docs = render("base");
    let job = docs
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "Job")
        .unwrap()
        .clone();
    let caps: Vec<String> =
        job["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_lowercase())
            .collect();
    let bounding = format!("--bounding-set=-all,+{}", caps.join(",+"));
    let netns = Netns::for_test("deploy-job");
    let out = Command::new("ip")
        .args(["netns", "exec", netns.name()])
        .args(["setpriv", &bounding, "--inh-caps=-all", "--"])
        .arg(loadprobe_tests::loadprobe_bin())
        .args([
            "run",
            "--users",
            "4",
            "--requests",
            "200",
            "--segments",
            "4",
        ])
        .args(["--start-at", "0", "--output", "-"])
        .env("JOB_COMPLETION_INDEX", "2")
        .output()
        .expect("loadprobe run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(record["probe"]["attached"], true, "{}", record["probe"]);
    // Without CAP_SYSLOG the probe attaches but cannot track TIME_WAIT (sock_diag instead).
    assert_eq!(
        record["time_wait"]["source"], "probe",
        "{}",
        record["time_wait"]
    );
    assert_eq!(record["segment"]["index"], 3);
    assert_eq!(record["segment"]["count"], 4);
    // Segment 3 of 4 of 200 requests: 50, each on a connection the client closed.
    assert_eq!(record["requests"]["total"], 50, "{stderr}");
    assert_eq!(
        record["connections"]["closer"]["client"], 50,
        "{}",
        record["connections"]
    );
}
