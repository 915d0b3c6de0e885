"""docs/configuration.md is generated from the programs' config tables: it must match them."""
import os
import subprocess
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_configuration_doc_matches_config_tables():
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "configuration.md")
        subprocess.run([os.path.join(ROOT, "scripts", "gen-config-doc.sh"), out], check=True,
                       cwd=ROOT, timeout=60)
        with open(out) as f:
            fresh = f.read()
    with open(os.path.join(ROOT, "docs", "configuration.md")) as f:
        committed = f.read()
    assert committed == fresh, "docs/configuration.md is stale: run scripts/gen-config-doc.sh"


def test_every_program_rejects_a_bad_value_naming_the_variable():
    for prog, var, bad in [("gateway", "port", "http"), ("queue-worker", "ack_wait", "5x"),
                           ("watchdog", "exec_timeout", "soon")]:
        env = dict(os.environ, **{var: bad, "fprocess": "cat"})
        p = subprocess.run([os.path.join(ROOT, "build", "bin", prog)], env=env,
                           capture_output=True, text=True, timeout=20)
        assert p.returncode == 2, (prog, p.returncode, p.stderr)
        assert var in p.stderr, (prog, p.stderr)
