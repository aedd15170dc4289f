#!/usr/bin/env python3
"""Runs the ceph/s3-tests conformance suite through s3crypt (in front of SeaweedFS, moto as KMS) and directly
against SeaweedFS, and compares the two per test.

What it does, in order:
  1. extracts the s3-tests snapshot (../shared/conformance/s3-tests-*.tar.gz) into WORK/s3-tests;
  2. makes a venv for s3-tests in WORK/conformance-venv (its requirements.txt plus pytest-timeout; reused while
     requirements.txt is unchanged);
  3. creates two symmetric KMS keys in the KMS (moto) for kms_keyid / kms_keyid2;
  4. starts s3crypt (S3CRYPT_BIN) in dev mode in front of SeaweedFS, with three clients (s3-tests' main, alt and
     tenant users) and the two KMS keys allowed;
  5. writes two S3TEST_CONF files (through s3crypt; directly against SeaweedFS) and runs each selected set in
     both, with a per-test timeout, collecting junit XML;
  6. writes WORK/report.md, WORK/report.json and WORK/report.tsv (test id, direct result, proxy result, failure
     messages) and prints a summary.

The sets:
  encryption  -m encryption (SSE-C, SSE-KMS, SSE-S3, bucket encryption, POST Object with SSE)
  broad       -m 'not encryption' and -k BROAD_K below: object, multipart, copy, list, range, conditional,
              checksum and attributes tests, minus ACL / policy / lock / lifecycle / logging / tagging / CORS /
              versioning / anonymous / presigned / POST / tenant tests (they test features s3crypt forwards or
              does not offer, and the direct run only has one SeaweedFS identity).

The gate (exit 1 unless --report-only):
  - a regression: a test that passes directly against SeaweedFS but fails (or errors) through s3crypt, in any set,
    unless it is a deliberate difference documented in docs/ and listed in tests/conformance/differences.txt
    (same format as the allow-list);
  - an encryption-set test that fails through s3crypt and is not in the allow-list (tests/conformance/allowlist.txt:
    one test id per line, "#" comments, every entry followed by a "# reason" comment; an entry without "[...]"
    covers every parametrization of that test);
  - a malformed allow-list entry (no reason).
  Allow-list entries that now pass through s3crypt are reported as stale (not a failure).
Exit 2: the harness itself could not run (no snapshot, s3crypt did not start, pytest produced no junit XML).

Environment (each also an argument): S3CRYPT_TEST_SEAWEEDFS_ENDPOINT, S3CRYPT_TEST_SEAWEEDFS_ACCESS_KEY,
S3CRYPT_TEST_SEAWEEDFS_SECRET_KEY, S3CRYPT_TEST_KMS_ENDPOINT, S3CRYPT_BIN; S3CRYPT_CONFORMANCE_WORK (work dir),
S3CRYPT_CONFORMANCE_SNAPSHOT (the tarball). Needs boto3 (run it with the project's test venv python).
"""
import argparse
import configparser
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

BROAD_K = (
    "(bucket_list or bucket_listv2 or basic_key_count or object or multipart or copy or ranged or atomic"
    " or ifmatch or ifnonematch or ifmodifiedsince or ifunmodifiedsince or if_match or if_none_match"
    " or checksum or cksum or get_part or 100_continue or attributes)"
    " and not (acl or lock or lifecycle or logging or policy or tagging or tags or cors or anonymous or anon"
    " or presigned or post_object or versioning or versioned or torrent or public or ownership or restore"
    " or tenant or access_bucket"
    # anonymous (unsigned) requests: s3crypt refuses them by design
    " or (object_raw_get and not expires) or object_delete_key_bucket_gone"
    # ownership between the main and the alt user: the direct run has one SeaweedFS identity for both
    " or not_owned or upload_owner)"
)
SETS = {
    "encryption": {"marker": "encryption", "k": None},
    "broad": {"marker": "not encryption", "k": BROAD_K},
}
TARGETS = ("direct", "proxy")

# The s3-tests users. Through s3crypt they are three [[clients]]; directly they all use the one SeaweedFS identity
# the test command configures.
USERS = {
    "main": ("conf-main", "conf-main-secret-0123456789", "M. Tester", "testid", "tester@example.com"),
    "alt": ("conf-alt", "conf-alt-secret-0123456789", "john.doe", "56789abcdef0123456789abcdef0123456789abcdef0123456789abcdef01234", "john.doe@example.com"),
    "tenant": ("conf-tenant", "conf-tenant-secret-0123456789", "testx$tenanteduser", "testx$9876543210abcdef", "tenanteduser@example.com"),
}


def log(msg):
    print(f"[conformance {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class HarnessError(Exception):
    """The harness could not run (exit 2)."""


# --- snapshot and venv ------------------------------------------------------------------------------------------

def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_snapshot(arg):
    if arg:
        p = Path(arg)
        if not p.is_file():
            raise HarnessError(f"snapshot {p} not found")
        return p
    d = ROOT.parent / "shared" / "conformance"
    found = sorted(d.glob("s3-tests-*.tar.gz"))
    if not found:
        raise HarnessError(f"no s3-tests-*.tar.gz in {d}")
    return found[-1]


def extract(snapshot, work):
    dest = work / "s3-tests"
    stamp = work / "s3-tests.sha256"
    digest = sha256_file(snapshot)
    if dest.is_dir() and stamp.is_file() and stamp.read_text().strip() == digest:
        return dest
    shutil.rmtree(dest, ignore_errors=True)
    with tarfile.open(snapshot) as t:
        if hasattr(tarfile, "data_filter"):
            t.extractall(work, filter="data")
        else:
            t.extractall(work)
    if not (dest / "s3tests" / "functional" / "test_s3.py").is_file():
        raise HarnessError(f"{snapshot} did not give {dest}/s3tests/functional/test_s3.py")
    stamp.write_text(digest + "\n")
    return dest


def make_venv(work, suite):
    venv = work / "conformance-venv"
    py = venv / "bin" / "python"
    reqs = suite / "requirements.txt"
    want = hashlib.sha256(reqs.read_bytes() + b"\npytest-timeout\n").hexdigest()
    stamp = venv / ".s3crypt-conformance-stamp"
    if py.is_file() and stamp.is_file() and stamp.read_text().strip() == want:
        return py, False
    shutil.rmtree(venv, ignore_errors=True)
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(reqs),
                    "pytest-timeout"], check=True)
    stamp.write_text(want + "\n")
    return py, True


# --- KMS and s3crypt -------------------------------------------------------------------------------------------

def create_kms_keys(endpoint):
    import boto3
    kms = boto3.client("kms", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    keys = []
    for i in (1, 2):
        meta = kms.create_key(Description=f"s3crypt conformance key {i}", KeyUsage="ENCRYPT_DECRYPT",
                              KeySpec="SYMMETRIC_DEFAULT")["KeyMetadata"]
        keys.append(meta["Arn"])
    return keys


def toml_str(s):
    return json.dumps(s)


class Proxy:
    """s3crypt, started like tests/e2e/conftest.py does (listen on 127.0.0.1:0, parse what it announces)."""

    def __init__(self, binary, workdir, sw, kms_endpoint, kms_keys):
        self.workdir = workdir
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        # Each s3-tests user owns its buckets at S3 and may set their encryption and policies: bucket admins.
        clients = "".join(
            f"[[clients]]\naccess_key_id = {toml_str(ak)}\nsecret_access_key = {toml_str(sk)}\nbucket_admin = true\n"
            for ak, sk, *_ in USERS.values())
        config = f"""# Generated by tests/conformance/run.py
[server]
mode = "dev"
# s3-tests sends bad signatures on purpose; no 503 SlowDown for them
auth_failures_per_address = 0
[[listeners]]
address = "127.0.0.1:0"
protocol = "https"
[tls]
self_signed_dir = "tls"
{clients}
[upstream]
endpoint = {toml_str(sw['endpoint'])}
region = "us-east-1"
addressing = "path"
access_key_id = {toml_str(sw['access_key'])}
secret_access_key = {toml_str(sw['secret_key'])}
[encryption]
keyring_file = "keyring.toml"
[encryption.kms]
endpoint = {toml_str(kms_endpoint)}
region = "us-east-1"
access_key_id = "testing"
secret_access_key = "testing"
# No default key: s3-tests expects SSE-KMS without a key id to be refused where no default is configured
# (test_sse_kms_no_key); AWS would use its aws/s3 key.
allowed_keys = [{toml_str(kms_keys[0])}, {toml_str(kms_keys[1])}]
[logging]
audit = "audit.jsonl"
"""
        (workdir / "proxy.toml").write_text(config)
        self.logfile = open(workdir / "s3crypt.log", "w")
        self.proc = subprocess.Popen(
            [binary, "serve", "--config", str(workdir / "proxy.toml")], cwd=workdir,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "RUST_LOG": os.environ.get("S3CRYPT_CONFORMANCE_RUST_LOG", "warn")})
        self.port = None
        self.ca = None
        head = []
        deadline = time.time() + 60
        while time.time() < deadline and self.port is None:
            line = self.proc.stderr.readline()
            if not line:
                self.logfile.write("".join(head))
                self.logfile.close()
                raise HarnessError("s3crypt exited early:\n" + "".join(head))
            head.append(line)
            m = re.match(r"s3crypt: listening on https://([\d.]+):(\d+)", line)
            if m:
                self.port = int(m.group(2))
            m = re.match(r"s3crypt: dev mode: generated a development CA at (\S+)", line)
            if m:
                self.ca = str((workdir / m.group(1)).resolve())
        self.logfile.write("".join(head))
        self.logfile.flush()
        if self.port is None:
            self.stop()
            raise HarnessError("s3crypt announced no https listener within 60 s:\n" + "".join(head))
        threading.Thread(target=self._drain, daemon=True).start()
        # Dev mode announces its CA after the listener (a CA kept from an earlier start is not announced).
        for _ in range(100):
            if self.ca:
                break
            time.sleep(0.1)
        ca = workdir / "tls" / "ca.pem"
        if not self.ca and ca.is_file():
            self.ca = str(ca)

    def _drain(self):
        for line in self.proc.stderr:
            self.logfile.write(line)
            self.logfile.flush()
            m = re.match(r"s3crypt: dev mode: generated a development CA at (\S+)", line)
            if m and not self.ca:
                self.ca = str((self.workdir / m.group(1)).resolve())

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log_findings(self):
        """Panics, ERROR/WARN lines and 5xx answers (from the audit log) for the report."""
        text = re.sub(r"\x1b\[[0-9;]*m", "", (self.workdir / "s3crypt.log").read_text(errors="replace"))
        lines = text.splitlines()
        panics = [l for l in lines if "panicked" in l]
        errors = [l for l in lines if re.search(r"\bERROR\b", l)]
        warns = [l for l in lines if re.search(r"\bWARN\b", l)]
        five = {}
        audit = self.workdir / "audit.jsonl"
        examples = []
        total = 0
        if audit.is_file():
            for l in audit.read_text(errors="replace").splitlines():
                try:
                    f = json.loads(l)["fields"]
                except (ValueError, KeyError):
                    continue
                total += 1
                if f.get("status", 0) >= 500:
                    k = f"{f.get('op')} {f.get('status')}"
                    five[k] = five.get(k, 0) + 1
                    if len(examples) < 20:
                        examples.append(l)
        return {"panics": panics, "errors": errors, "warnings": warns, "requests": total, "5xx": five,
                "5xx_examples": examples, "exit_code": self.proc.returncode}


# --- s3-tests configuration and runs -----------------------------------------------------------------------------

def write_s3tests_conf(path, host, port, secure, users, kms_keys, verify=False):
    cfg = configparser.RawConfigParser()
    cfg["DEFAULT"] = {"host": host, "port": str(port), "is_secure": str(secure), "ssl_verify": str(verify)}
    cfg["fixtures"] = {"bucket prefix": "s3t-{random}-", "iam name prefix": "s3-tests-",
                       "iam path prefix": "/s3-tests/"}
    for section, name in (("s3 main", "main"), ("s3 alt", "alt"), ("s3 tenant", "tenant")):
        ak, sk, display, uid, email = users[name]
        cfg[section] = {"access_key": ak, "secret_key": sk, "display_name": display, "user_id": uid,
                        "email": email}
    cfg["s3 main"]["api_name"] = ""
    cfg["s3 main"]["kms_keyid"] = kms_keys[0]
    cfg["s3 main"]["kms_keyid2"] = kms_keys[1]
    cfg["s3 tenant"]["tenant"] = "testx"
    ak, sk, display, uid, email = users["main"]
    cfg["iam"] = {"access_key": ak, "secret_key": sk, "display_name": display, "user_id": uid, "email": email}
    cfg["iam root"] = {"access_key": ak, "secret_key": sk, "user_id": uid, "email": email}
    cfg["iam alt root"] = {"access_key": ak, "secret_key": sk, "user_id": uid, "email": email}
    with open(path, "w") as f:
        cfg.write(f)


def run_pytest(py, suite, conf, setname, target, junit, logpath, timeout, run_timeout, extra, ca=None):
    sel = SETS[setname]
    cmd = [str(py), "-m", "pytest", "s3tests/functional/test_s3.py", "-m", sel["marker"]]
    if sel["k"]:
        cmd += ["-k", sel["k"]]
    cmd += ["-p", "no:cacheprovider", "-q", "-rN", "--tb=short", f"--junitxml={junit}",
            f"--timeout={timeout}", "--timeout-method=signal", "-o", "junit_logging=no"] + list(extra)
    env = {**os.environ, "S3TEST_CONF": str(conf), "PYTHONUNBUFFERED": "1"}
    for k in ("REQUESTS_CA_BUNDLE", "AWS_CA_BUNDLE", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        env.pop(k, None)
    env["AWS_CONFIG_FILE"] = os.devnull
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    if ca:
        # the tests that call requests.post without verify= and the raw-socket 100-continue test
        # (ssl.create_default_context) trust the dev CA
        env["AWS_CA_BUNDLE"] = env["REQUESTS_CA_BUNDLE"] = env["SSL_CERT_FILE"] = ca
    if junit.exists():
        junit.unlink()
    start = time.time()
    with open(logpath, "w") as out:
        p = subprocess.Popen(cmd, cwd=suite, env=env, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
        try:
            rc = p.wait(timeout=run_timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            rc = "run-timeout"
    return rc, time.time() - start


def collect_ids(py, suite, conf, marker, k):
    """Test ids (names with parameters) pytest selects with -m marker [-k k], without running them."""
    cmd = [str(py), "-m", "pytest", "s3tests/functional/test_s3.py", "--collect-only", "-q", "-p",
           "no:cacheprovider", "-m", marker] + (["-k", k] if k else [])
    r = subprocess.run(cmd, cwd=suite, env={**os.environ, "S3TEST_CONF": str(conf)}, capture_output=True,
                       text=True)
    if r.returncode not in (0, 5):
        raise HarnessError(f"pytest --collect-only failed ({r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return {l.split("::", 1)[1].strip() for l in r.stdout.splitlines() if "::" in l}


def parse_junit(path):
    """{test id: (result, message)}, result one of passed, failed, error, skipped, timeout."""
    results = {}
    root = ET.parse(path).getroot()
    for tc in root.iter("testcase"):
        name = tc.get("name")
        result, msg = "passed", ""
        for child in tc:
            tag = child.tag
            if tag in ("failure", "error"):
                text = (child.get("message") or "") + "\n" + (child.text or "")
                msg = short_message(child.get("message") or "", child.text or "")
                if "Timeout (>" in text or "pytest-timeout" in text:
                    result = "timeout"
                elif result != "failed":
                    result = "failed" if tag == "failure" else "error"
                if tag == "error" and result == "error":
                    msg = "(setup/teardown) " + msg
            elif tag == "skipped":
                if result == "passed":
                    result = "skipped"
                    msg = short_message(child.get("message") or "", "")
        results[name] = (result, msg)
    return results


def short_message(message, text):
    m = " ".join(message.split())
    if not m or m in ("failed", "error"):
        lines = [l.strip() for l in text.splitlines() if l.strip().startswith("E ")]
        m = " ".join(l[1:].strip() for l in lines[:3])
    return m[:400]


# --- the direct baseline ---

def seaweedfs_version(weed):
    try:
        out = subprocess.run([weed, "version"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return None
    m = re.search(r"version\s+\S+\s+(\S+)", out)
    return m.group(1) if m else None


def load_baseline(path, key):
    """The recorded direct results if they were recorded for `key` (SeaweedFS version, snapshot, selection)."""
    if not path.is_file() or key["seaweedfs"] is None:
        return None
    try:
        rec = json.loads(path.read_text())
    except ValueError:
        return None
    if any(rec.get(k) != v for k, v in key.items()):
        return None
    return {"results": {s: {t: tuple(v) for t, v in tests.items()} for s, tests in rec["results"].items()}}


# --- allow-list and gate ------------------------------------------------------------------------------------------

def read_allowlist(path):
    """(entries {name: reason}, problems [str])."""
    entries, problems = {}, []
    if not path.is_file():
        return entries, [f"allow-list {path} not found"]
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, _, reason = line.partition("#")
        name, reason = name.strip(), reason.strip()
        if not reason:
            problems.append(f"{path.name}:{n}: '{name}' has no '# reason' comment")
        if " " in name:
            problems.append(f"{path.name}:{n}: '{name}' is not one test id")
        entries[name] = reason
    return entries, problems


def allow_entry_for(test, entries):
    if test in entries:
        return test
    base = test.split("[", 1)[0]
    if base in entries:
        return base
    return None


def bad(result):
    return result in ("failed", "error", "timeout")


def gate(results, entries, problems, rgw_only, differences=None):
    """results: {set: {test: {target: (result, msg)}}}; rgw_only: {set: ids marked fails_on_aws}; differences:
    {test id: reason} of deliberate, documented differences from the store (not gated, reported)."""
    differences = differences or {}
    regressions, rgw_regressions, unlisted, stale, unknown = [], [], [], [], []
    documented, stale_differences = [], []
    used = {}
    for setname, tests in results.items():
        for test, by in sorted(tests.items()):
            d = by.get("direct", ("-", ""))[0]
            p = by.get("proxy", ("-", ""))[0]
            diff = allow_entry_for(test, differences)
            if d == "passed" and bad(p):
                # fails_on_aws: RGW extensions AWS itself fails; s3crypt follows AWS, so not a regression
                if test in rgw_only.get(setname, ()):
                    rgw_regressions.append((setname, test, by["proxy"][1]))
                elif diff:
                    documented.append((setname, test, differences[diff]))
                elif setname == "encryption" and allow_entry_for(test, entries):
                    documented.append((setname, test, entries[allow_entry_for(test, entries)]))
                else:
                    regressions.append((setname, test, by["proxy"][1]))
            elif diff and p == "passed":
                stale_differences.append(diff)
            if setname == "encryption" and "proxy" in by:
                e = allow_entry_for(test, entries)
                if e:
                    used.setdefault(e, []).append(p)
                if bad(p) and not e:
                    unlisted.append((test, by["proxy"][1]))
    ran_encryption = any("proxy" in by for by in results.get("encryption", {}).values())
    if ran_encryption:
        for e in entries:
            if e not in used:
                unknown.append(e)
            elif all(r == "passed" for r in used[e]):
                stale.append(e)
    return {"regressions": regressions, "rgw_only_differences": rgw_regressions, "unlisted": unlisted,
            "stale": stale, "unknown": unknown, "problems": problems, "documented": documented,
            "stale_differences": sorted(set(stale_differences))}


# --- report -------------------------------------------------------------------------------------------------------

SYMBOL = {"passed": "pass", "failed": "FAIL", "error": "ERROR", "skipped": "skip", "timeout": "TIMEOUT", "-": "-"}


def write_reports(work, results, times, gate_result, proxy_findings, meta, rgw_only):
    counts = {}
    for setname, tests in results.items():
        c = counts.setdefault(setname, {})
        for by in tests.values():
            for target, (r, _) in by.items():
                t = c.setdefault(target, {"total": 0})
                t["total"] += 1
                t[r] = t.get(r, 0) + 1
    summary_lines = ["| set | target | passed | failed | error | timeout | skipped | total | wall time |",
                     "|---|---|---|---|---|---|---|---|---|"]
    for setname in results:
        for target in TARGETS:
            t = counts.get(setname, {}).get(target)
            if not t:
                continue
            w = times.get(f"{setname}/{target}")
            summary_lines.append(
                f"| {setname} | {target} | {t.get('passed', 0)} | {t.get('failed', 0)} | {t.get('error', 0)} | "
                f"{t.get('timeout', 0)} | {t.get('skipped', 0)} | {t['total']} | "
                f"{'%.0f s' % w if w is not None else '-'} |")

    md = ["# s3-tests conformance: s3crypt vs SeaweedFS direct", "",
          f"Snapshot {meta['snapshot']}; s3crypt {meta['s3crypt_bin']}; SeaweedFS {meta['seaweedfs']}; "
          f"KMS {meta['kms']}; per-test timeout {meta['timeout']} s.", "",
          "## Summary", ""] + summary_lines + ["", "Wall times: " + ", ".join(
              f"{k} {v:.0f} s" for k, v in times.items()), ""]
    g = gate_result
    md += ["## Gate", "",
           f"- regressions (pass direct, fail through s3crypt): {len(g['regressions'])}",
           f"- documented differences (pass direct, fail through s3crypt, in differences.txt): "
           f"{len(g['documented'])}",
           f"- not gated: pass direct, fail through s3crypt, marked fails_on_aws (RGW extensions): "
           f"{len(g['rgw_only_differences'])}",
           f"- encryption-set failures through s3crypt not in the allow-list: {len(g['unlisted'])}",
           f"- stale allow-list entries (now pass through s3crypt): {len(g['stale'])}",
           f"- allow-list entries matching no test that ran: {len(g['unknown'])}",
           f"- allow-list problems: {len(g['problems'])}", ""]
    for title, rows in (("Regressions", g["regressions"]), ("Documented differences", g["documented"]),
                        ("Pass direct, fail through s3crypt, fails_on_aws (not gated)", g["rgw_only_differences"])):
        if rows:
            md += [f"### {title}", ""] + [f"- `{t}` ({s}): {m}" for s, t, m in rows] + [""]
    if g["unlisted"]:
        md += ["### Encryption failures not allow-listed", ""] + [f"- `{t}`: {m}" for t, m in g["unlisted"]] + [""]
    if g["stale"]:
        md += ["### Stale allow-list entries", ""] + [f"- `{t}`" for t in g["stale"]] + [""]
    if g["unknown"]:
        md += ["### Allow-list entries matching no test", ""] + [f"- `{t}`" for t in g["unknown"]] + [""]
    if g["problems"]:
        md += ["### Allow-list problems", ""] + [f"- {p}" for p in g["problems"]] + [""]
    if proxy_findings:
        f = proxy_findings
        md += ["## s3crypt log", "",
               f"- requests audited: {f['requests']}; exit code after SIGTERM: {f['exit_code']}",
               f"- panics: {len(f['panics'])}; ERROR lines: {len(f['errors'])}; WARN lines: {len(f['warnings'])}",
               f"- 5xx answers by operation: {json.dumps(f['5xx'])}", ""]
        for title, key in (("Panics", "panics"), ("ERROR lines (first 20)", "errors"),
                           ("WARN lines (first 20)", "warnings"),
                           ("5xx audit lines (first 20)", "5xx_examples")):
            if f[key]:
                md += [f"### {title}", "", "```"] + [l[:600] for l in f[key][:20]] + ["```", ""]
    for setname, tests in results.items():
        md += [f"## Set {setname}", "", "| test | direct | proxy | proxy failure | direct failure |",
               "|---|---|---|---|---|"]
        for test, by in sorted(tests.items()):
            d, dm = by.get("direct", ("-", ""))
            p, pm = by.get("proxy", ("-", ""))
            mark = " (fails_on_aws)" if test in rgw_only.get(setname, ()) else ""
            md.append(f"| `{test}`{mark} | {SYMBOL[d]} | {SYMBOL[p]} | {esc(pm) if bad(p) else ''} | "
                      f"{esc(dm) if bad(d) else ''} |")
        md.append("")
    (work / "report.md").write_text("\n".join(md) + "\n")

    with open(work / "report.tsv", "w") as f:
        f.write("set\ttest\tfails_on_aws\tdirect\tproxy\tproxy_message\tdirect_message\n")
        for setname, tests in results.items():
            for test, by in sorted(tests.items()):
                d, dm = by.get("direct", ("-", ""))
                p, pm = by.get("proxy", ("-", ""))
                rgw = "yes" if test in rgw_only.get(setname, ()) else ""
                f.write(f"{setname}\t{test}\t{rgw}\t{d}\t{p}\t{pm}\t{dm}\n".replace("\r", " "))
    (work / "report.json").write_text(json.dumps({
        "meta": meta, "counts": counts, "times": times, "gate": gate_result, "s3crypt": proxy_findings,
        "fails_on_aws": {k: sorted(v) for k, v in rgw_only.items()},
        "results": {s: {t: {k: {"result": r, "message": m} for k, (r, m) in by.items()} for t, by in tests.items()}
                    for s, tests in results.items()}}, indent=1))
    return summary_lines


def esc(s):
    return s.replace("|", "\\|").replace("\n", " ")[:300]


# --- main ---------------------------------------------------------------------------------------------------------

def main():
    env = os.environ.get
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=env("S3CRYPT_CONFORMANCE_WORK", str(ROOT / "target" / "conformance")))
    ap.add_argument("--snapshot", default=env("S3CRYPT_CONFORMANCE_SNAPSHOT"))
    ap.add_argument("--s3crypt-bin", default=env("S3CRYPT_BIN", str(ROOT / "target" / "debug" / "s3crypt")))
    ap.add_argument("--seaweedfs-endpoint", default=env("S3CRYPT_TEST_SEAWEEDFS_ENDPOINT"))
    ap.add_argument("--seaweedfs-access-key", default=env("S3CRYPT_TEST_SEAWEEDFS_ACCESS_KEY"))
    ap.add_argument("--seaweedfs-secret-key", default=env("S3CRYPT_TEST_SEAWEEDFS_SECRET_KEY"))
    ap.add_argument("--kms-endpoint", default=env("S3CRYPT_TEST_KMS_ENDPOINT"))
    ap.add_argument("--sets", default=env("S3CRYPT_CONFORMANCE_SETS", "encryption,broad"),
                    help="comma-separated: " + ", ".join(SETS))
    ap.add_argument("--targets", default=env("S3CRYPT_CONFORMANCE_TARGETS", "direct,proxy"),
                    help="comma-separated: direct, proxy")
    ap.add_argument("--timeout", type=int, default=int(env("S3CRYPT_CONFORMANCE_TIMEOUT", "120")),
                    help="per-test timeout in seconds (pytest-timeout)")
    ap.add_argument("--run-timeout", type=int, default=int(env("S3CRYPT_CONFORMANCE_RUN_TIMEOUT", "2400")),
                    help="cap on one pytest run (one set against one target), seconds")
    ap.add_argument("--parallel", action="store_true",
                    help="run the direct and the proxy pass of a set at the same time (two pytest processes)")
    ap.add_argument("--allowlist", default=str(HERE / "allowlist.txt"))
    ap.add_argument("--baseline", default=str(HERE / "direct-baseline.json"),
                    help="recorded direct results, used when --targets has no 'direct' and the SeaweedFS version, "
                         "snapshot and selection match")
    ap.add_argument("--record-baseline", action="store_true", help="write the direct results to --baseline")
    ap.add_argument("--weed", default=env("S3CRYPT_CONFORMANCE_WEED", str(ROOT / "target" / "test-venv" / "bin" / "weed")),
                    help="the SeaweedFS binary serving the endpoint (for its version)")
    ap.add_argument("--differences", default=str(HERE / "differences.txt"),
                    help="deliberate, documented differences from the store: not gated")
    ap.add_argument("--report-only", action="store_true", help="report, never fail (exit 0 unless the harness "
                    "itself cannot run)")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --), e.g. -- -x")
    a = ap.parse_args()

    try:
        return run(a)
    except HarnessError as e:
        log(f"harness error: {e}")
        return 2


def run(a):
    sets = [s for s in a.sets.split(",") if s]
    targets = [t for t in a.targets.split(",") if t]
    for s in sets:
        if s not in SETS:
            raise HarnessError(f"unknown set {s!r}; known: {', '.join(SETS)}")
    for t in targets:
        if t not in TARGETS:
            raise HarnessError(f"unknown target {t!r}; known: {', '.join(TARGETS)}")
    missing = [n for n, v in (("S3CRYPT_TEST_SEAWEEDFS_ENDPOINT", a.seaweedfs_endpoint),
                              ("S3CRYPT_TEST_SEAWEEDFS_ACCESS_KEY", a.seaweedfs_access_key),
                              ("S3CRYPT_TEST_SEAWEEDFS_SECRET_KEY", a.seaweedfs_secret_key),
                              ("S3CRYPT_TEST_KMS_ENDPOINT", a.kms_endpoint)) if not v]
    if missing:
        raise HarnessError("not set: " + ", ".join(missing) + " (scripts/test.sh exports them)")
    if "proxy" in targets and not os.access(a.s3crypt_bin, os.X_OK):
        raise HarnessError(f"s3crypt binary {a.s3crypt_bin} not found (S3CRYPT_BIN)")

    work = Path(a.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    (work / "results").mkdir(exist_ok=True)
    times = {}
    t_all = time.time()

    snapshot = find_snapshot(a.snapshot)
    t0 = time.time()
    suite = extract(snapshot, work)
    times["extract"] = time.time() - t0
    t0 = time.time()
    log(f"venv for s3-tests in {work / 'conformance-venv'}")
    py, installed = make_venv(work, suite)
    times["venv install" if installed else "venv (reused)"] = time.time() - t0
    log(f"venv ready in {times.get('venv install', times.get('venv (reused)')):.0f} s")

    kms_keys = create_kms_keys(a.kms_endpoint)
    log(f"KMS keys: {kms_keys[0]}, {kms_keys[1]}")
    sw = {"endpoint": a.seaweedfs_endpoint, "access_key": a.seaweedfs_access_key,
          "secret_key": a.seaweedfs_secret_key}
    u = urllib.parse.urlparse(sw["endpoint"])
    sw_secure = u.scheme == "https"
    sw_port = u.port or (443 if sw_secure else 80)

    # The direct results: recorded for this SeaweedFS version, snapshot and selection (direct-baseline.json), or run
    # now. A baseline that does not match is not used.
    weed_version = seaweedfs_version(a.weed)
    baseline_key = {"seaweedfs": weed_version, "snapshot": snapshot.name,
                    "sets": {s: SETS[s] for s in sets}}
    live_targets = list(targets)
    baseline = None
    if "direct" not in targets and a.baseline:
        baseline = load_baseline(Path(a.baseline), baseline_key)
        if baseline is None:
            log(f"no direct baseline for SeaweedFS {weed_version!r} and this selection in {a.baseline}: running "
                "the direct pass too (--record-baseline keeps it)")
            live_targets.insert(0, "direct")
        else:
            log(f"direct results: the baseline recorded for SeaweedFS {weed_version} ({a.baseline})")
    targets = live_targets if baseline is None else targets
    confs = {}
    if "direct" in live_targets:
        direct_users = {n: (sw["access_key"], sw["secret_key"], *USERS[n][2:]) for n in USERS}
        confs["direct"] = work / "s3tests-direct.conf"
        write_s3tests_conf(confs["direct"], u.hostname, sw_port, sw_secure, direct_users, kms_keys)
    proxy = None
    findings = None
    results = {s: {} for s in sets}
    if baseline is not None:
        for setname in sets:
            for test, (r, m) in baseline["results"].get(setname, {}).items():
                results[setname].setdefault(test, {})["direct"] = (r, m)
    rgw_only = {}
    any_conf = work / "s3tests-collect.conf"
    write_s3tests_conf(any_conf, "127.0.0.1", 1, False, USERS, kms_keys)
    for setname in sets:
        sel = SETS[setname]
        rgw_only[setname] = collect_ids(py, suite, any_conf, f"({sel['marker']}) and fails_on_aws", sel["k"])
    try:
        if "proxy" in targets:
            proxy = Proxy(a.s3crypt_bin, work / "proxy", sw, a.kms_endpoint, kms_keys)
            log(f"s3crypt listening on https://127.0.0.1:{proxy.port} (log {proxy.workdir / 's3crypt.log'})")
            confs["proxy"] = work / "s3tests-proxy.conf"
            # ssl_verify = False: boto3 ignores AWS_CA_BUNDLE when given verify=True; the dev CA goes to the tests
            # that use requests' or ssl's defaults through REQUESTS_CA_BUNDLE / SSL_CERT_FILE (run_pytest)
            write_s3tests_conf(confs["proxy"], "127.0.0.1", proxy.port, True, USERS, kms_keys)

        jobs = [(setname, target) for setname in sets for target in live_targets]

        def one(setname, target):
            junit = work / "results" / f"{setname}-{target}.xml"
            logpath = work / "results" / f"{setname}-{target}.log"
            log(f"set {setname}: {target} ...")
            rc, secs = run_pytest(py, suite, confs[target], setname, target, junit, logpath, a.timeout,
                                  a.run_timeout, a.pytest_args,
                                  ca=proxy.ca if (proxy and target == "proxy") else None)
            log(f"set {setname}: {target} done in {secs:.0f} s (pytest exit {rc})")
            return setname, target, junit, logpath, rc, secs

        # --parallel: two pytest processes at a time (the machine's cores; s3crypt and the store share them)
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max_workers=2 if a.parallel else 1) as pool:
            finished = list(pool.map(lambda job: one(*job), jobs))
        for setname, target, junit, logpath, rc, secs in finished:
            times[f"{setname}/{target}"] = secs
            if not junit.is_file():
                tail = logpath.read_text(errors="replace")[-3000:]
                raise HarnessError(f"pytest wrote no junit XML for {setname}/{target} (exit {rc}):\n{tail}")
            for test, res in parse_junit(junit).items():
                results[setname].setdefault(test, {})[target] = res
        if proxy and not proxy.alive():
            log(f"s3crypt exited during the run (exit code {proxy.proc.returncode})")
    finally:
        if proxy:
            rc = proxy.stop()
            findings = proxy.log_findings()
            log(f"s3crypt stopped (exit {rc})")
    times["total"] = time.time() - t_all
    if a.record_baseline and "direct" in live_targets:
        rec = {**baseline_key, "results": {s: {t: list(by["direct"]) for t, by in tests.items() if "direct" in by}
                                           for s, tests in results.items()}}
        Path(a.baseline).write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n")
        log(f"direct baseline recorded in {a.baseline}")

    entries, problems = read_allowlist(Path(a.allowlist))
    differences, diff_problems = read_allowlist(Path(a.differences))
    g = gate(results, entries, problems + diff_problems, rgw_only, differences)
    meta = {"snapshot": snapshot.name, "s3crypt_bin": a.s3crypt_bin, "seaweedfs": sw["endpoint"],
            "kms": a.kms_endpoint, "timeout": a.timeout, "sets": {s: SETS[s] for s in sets},
            "kms_keys": kms_keys}
    summary = write_reports(work, results, times, g, findings, meta, rgw_only)

    print()
    print("\n".join(summary))
    print("wall times: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
    if findings:
        print(f"s3crypt: {findings['requests']} requests, {len(findings['panics'])} panics, "
              f"{len(findings['errors'])} ERROR lines, 5xx: {json.dumps(findings['5xx'])}, "
              f"exit {findings['exit_code']}")
    for s, t, m in g["regressions"]:
        print(f"REGRESSION [{s}] {t}: {m}")
    for s, t, m in g["documented"]:
        print(f"documented difference [{s}] {t}: {m}")
    for t in g["stale_differences"]:
        print(f"STALE difference entry (passes through s3crypt now): {t}")
    for s, t, m in g["rgw_only_differences"]:
        print(f"pass direct, fail through s3crypt, fails_on_aws (not gated) [{s}] {t}: {m}")
    for t, m in g["unlisted"]:
        print(f"NOT ALLOW-LISTED [encryption] {t}: {m}")
    for t in g["stale"]:
        print(f"STALE allow-list entry (passes through s3crypt now): {t}")
    for t in g["unknown"]:
        print(f"allow-list entry matching no test that ran: {t}")
    for p in g["problems"]:
        print(f"ALLOW-LIST PROBLEM: {p}")
    print(f"report: {work / 'report.md'} (also report.tsv, report.json; logs in {work / 'results'})")
    failed = bool(g["regressions"] or g["unlisted"] or g["problems"])
    if findings and findings["panics"]:
        print("s3crypt panicked (see the report)")
        failed = True
    if failed and not a.report_only:
        print("conformance: FAILED")
        return 1
    print("conformance: " + ("failures reported (--report-only)" if failed else "OK"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
