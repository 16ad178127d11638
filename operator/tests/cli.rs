//! The operator's command line: `crdgen` (and the committed CRD it must
//! match) and `render`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn operator() -> Command {
    Command::new(env!("CARGO_BIN_EXE_restreamer-operator"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn the_committed_crd_is_what_crdgen_prints() {
    let output = operator().arg("crdgen").output().unwrap();
    assert!(output.status.success());
    let generated = String::from_utf8(output.stdout).unwrap();
    let committed = std::fs::read_to_string(root().join("crds/restream.yaml")).unwrap();
    assert!(
        generated == committed,
        "crds/restream.yaml is out of date: run `cargo run -p restreamer-operator -- crdgen > crds/restream.yaml`"
    );
}

#[test]
fn the_crd_documents_its_fields_and_carries_the_validations() {
    let crd: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root().join("crds/restream.yaml")).unwrap())
            .unwrap();
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let limits = &spec["properties"]["limits"]["properties"];
    assert!(limits["softConnections"]["description"]
        .as_str()
        .unwrap()
        .contains("full"));
    assert_eq!(limits["softConnections"]["default"], 800);
    let stall = &limits["stallTimeoutSeconds"];
    assert_eq!(
        (stall["type"].as_str(), stall["minimum"].as_f64()),
        (Some("integer"), Some(0.0))
    );
    assert!(stall["description"].as_str().unwrap().contains("0 = never"));
    let rules: Vec<&str> = spec["x-kubernetes-validations"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|rule| rule["rule"].as_str().unwrap())
        .collect();
    assert!(rules
        .iter()
        .any(|r| r.contains("softConnections <= self.limits.maxConnections")));
    assert!(rules
        .iter()
        .any(|r| r.contains("minReplicas <= self.scaling.maxReplicas")));
    let stream = &spec["properties"]["streams"]["items"]["properties"];
    // The schema's patterns agree with the operator's and the data plane's checks.
    let path_pattern = regex::Regex::new(stream["path"]["pattern"].as_str().unwrap()).unwrap();
    for path in [
        "/news.ts",
        "/",
        "/a/b;c=d",
        "/%E2%82%AC",
        "news.ts",
        "/n?ws",
        "/a b",
        "/ü",
        "/x#y",
    ] {
        assert_eq!(
            path_pattern.is_match(path),
            restreamer_operator::crd::check_stream_path(path).is_ok(),
            "{path}"
        );
    }
    let upstream_pattern =
        regex::Regex::new(stream["upstreams"]["items"]["pattern"].as_str().unwrap()).unwrap();
    for url in [
        "http://a/b.ts",
        "https://a/b",
        "tcp://a:1",
        "udp://:1234",
        "unix:///run/s",
        "unixgram:///s",
        "unixpacket:///s",
        "file:///x.ts",
        "fork:///bin/cat?x",
    ] {
        assert!(upstream_pattern.is_match(url), "{url}");
        assert!(restreamer::config::Upstream::parse(url).is_ok(), "{url}");
    }
    for url in ["rtmp://a/b", "srt://a:1", "/local/file.ts", "HTTP://a/b"] {
        assert!(!upstream_pattern.is_match(url), "{url}");
    }
    assert_eq!(stream["upstreams"]["minItems"], 1);
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        ["Streams", "Replicas", "Desired", "Ready", "Status", "Age"]
    );
    assert!(version["subresources"]["status"].is_mapping());
}

#[test]
fn render_prints_every_object_offline() {
    let output = operator()
        .args(["render", "-f"])
        .arg(root().join("operator/yaml/instance-good.yaml"))
        .args(["--image", "registry.example/restreamer:1.2"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(text.matches("\n---\n").count() + 1, 5, "{text}");
    for kind in [
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ] {
        assert!(text.contains(&format!("kind: {kind}\n")), "no {kind}");
    }
    assert!(text.contains("image: registry.example/restreamer:1.2"));
}

#[test]
fn render_refuses_a_bad_restream_naming_the_fields() {
    for (file, expected) in [
        (
            "instance-bad.yaml",
            "spec.limits.softConnections: 2000 is above maxConnections 1000",
        ),
        ("instance-illegal.yaml", "unsupported scheme \"rtmp\""),
    ] {
        let output = operator()
            .args(["render", "-f"])
            .arg(root().join("operator/yaml").join(file))
            .output()
            .unwrap();
        assert!(!output.status.success(), "{file} rendered");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{file}: {stderr}");
    }
}

#[test]
fn the_crd_in_the_chart_is_the_generated_one() {
    let committed = std::fs::read_to_string(root().join("crds/restream.yaml")).unwrap();
    let charted =
        std::fs::read_to_string(root().join("helm/restreamer/crds/restream.yaml")).unwrap();
    assert!(
        committed == charted,
        "helm/restreamer/crds/restream.yaml drifted: cp crds/restream.yaml helm/restreamer/crds/ && tests/render-deploy.sh"
    );
}

#[test]
fn the_deploy_example_renders() {
    let output = operator()
        .args(["render", "-f"])
        .arg(root().join("deploy/examples/restream.yaml"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_keda_example_renders_a_scaled_object_instead_of_the_hpa() {
    let output = operator()
        .args(["render", "-f"])
        .arg(root().join("operator/yaml/instance-keda.yaml"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\n"));
    assert!(!text.contains("kind: HorizontalPodAutoscaler"));
    assert!(text.contains("hostNetwork: true"));
    assert!(text.contains("externalTrafficPolicy: Local"));
}

#[test]
fn plan_counts_one_gop_per_channel_for_instant_start() {
    let plan = |args: &[&str]| {
        let output = operator()
            .args(["plan", "--viewers", "100000", "--streams", "10"])
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let default = plan(&[]);
    assert!(
        default.contains("| instant start per channel | 1.9 MiB (one 2 s GOP at 8.0 Mbit/s), in the memory per pod |"),
        "{default}"
    );
    assert!(
        default.contains("| memory per pod (limit) | 112 MiB |"),
        "{default}"
    );
    let long = plan(&["--gop", "5"]);
    assert!(long.contains("4.8 MiB (one 5 s GOP"), "{long}");
    assert!(
        long.contains("| memory per pod (limit) | 144 MiB |"),
        "{long}"
    );
    let off = plan(&["--no-instant-start"]);
    assert!(off.contains("| memory per pod (limit) | 80 MiB |"), "{off}");
    assert!(off.contains("instantStart:\n    enabled: false"), "{off}");

    let output = operator()
        .args(["plan", "--viewers", "1000", "--gop", "0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8(output.stderr).unwrap();
    assert!(
        error.contains("--gop") && error.contains("greater than 0"),
        "{error}"
    );
}
