"""Unit tests of the rollback target (deploy/pierdeploy/state.py), the deploy file's loader
(deploy/pierdeploy/config.py), the generated reference, and the command's argument checks.

    python3 -m unittest discover -s test/delivery/unit      (ci/lint.sh check delivery-unit)
"""

import os
import subprocess
import sys
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "deploy"))

from pierdeploy import config, state  # noqa: E402

DEPLOY_FILE = os.path.join(ROOT, "deploy", "pier-deploy.yml")


class ChainTest(unittest.TestCase):
    def walk(self, steps):
        """Apply deploy/rollback steps to a live system of (tag, chain); return the live tags."""
        live, chain, seen = None, [], []
        for step in steps:
            action, _, target = step.partition(" ")
            tag, chain = state.next_chain(action, live, chain, target or None)
            live = tag
            seen.append(live)
        return seen, chain

    def test_rollback_twice_goes_further_back_never_forward(self):
        seen, _ = self.walk(["deploy v0", "deploy v1", "deploy v2", "rollback", "rollback"])
        self.assertEqual(seen, ["v0", "v1", "v2", "v1", "v0"])

    def test_nothing_before(self):
        with self.assertRaises(ValueError):
            self.walk(["deploy v1", "rollback"])
        with self.assertRaises(ValueError):
            state.next_chain("rollback", None, [])

    def test_rollback_with_a_tag_is_a_deploy_of_it(self):
        seen, chain = self.walk(["deploy v0", "deploy v1", "deploy v2", "rollback v0", "rollback"])
        self.assertEqual(seen, ["v0", "v1", "v2", "v0", "v2"])

    def test_deploy_after_rollback(self):
        seen, chain = self.walk(["deploy v1", "deploy v2", "rollback", "deploy v3", "rollback"])
        self.assertEqual(seen, ["v1", "v2", "v1", "v3", "v1"])
        self.assertEqual(chain, [])  # v3 is not a rollback target of v1: that would be forward

    def test_redeploy_of_the_live_tag_keeps_its_chain(self):
        _, chain = self.walk(["deploy v1", "deploy v2", "deploy v2"])
        self.assertEqual(chain, ["v1"])

    def test_chain_is_bounded_and_round_trips_a_label(self):
        _, chain = self.walk([f"deploy v{i}" for i in range(40)])
        self.assertEqual(len(chain), state.CHAIN_MAX)
        self.assertEqual(state.parse_chain(state.format_chain(chain)), chain)


def container(slot, replica, tag, running=True, previous=""):
    return {"name": f"pier-prod-{slot}-{replica}", "labels": {"pier.env": "prod", "pier.slot": slot,
            "pier.replica": replica, "pier.tag": tag, "pier.previous": previous}, "running": running}


class StateTest(unittest.TestCase):
    def test_problems_after_an_interrupted_deploy(self):
        st = state.EnvState("prod", "green", {
            "blue": state.Slot("blue", [container("blue", "a", "v1"), container("blue", "b", "v1")]),
            "green": state.Slot("green", [container("green", "a", "v2"), container("green", "b", "v2", running=False)])})
        probs = st.problems(["a", "b"])
        self.assertTrue(any("replica(s) b not running" in p for p in probs))
        self.assertTrue(any("idle slot blue has running containers" in p for p in probs))

    def test_clean(self):
        st = state.EnvState("prod", "blue", {"blue": state.Slot("blue", [container("blue", "a", "v1"), container("blue", "b", "v1")]),
                                             "green": state.Slot("green", [])})
        self.assertEqual(st.problems(["a", "b"]), [])

    def test_images_to_keep(self):
        st = state.EnvState("prod", "blue", {"blue": state.Slot("blue", [container("blue", "a", "v3", previous="v2 v1 v0")]),
                                             "green": state.Slot("green", [container("green", "a", "v9", running=False)])})
        self.assertEqual(state.images_to_keep([st], 2), {"v3", "v2", "v9"})


GOOD = """
host:
  state_dir: /var/lib/pier-deploy
environments:
  prod:
    image: ghcr.io/acme/pier
    prefix: /prod
    container_port: 8000
    ports: {blue: [8000, 8002], green: [8010, 8012]}
    watch:
      window_s: 60
  staging:
    image: ghcr.io/acme/pier
    prefix: /staging
    container_port: 8001
    ports: {blue: [8001, 8003], green: [8011, 8013]}
"""


class ConfigTest(unittest.TestCase):
    def bad(self, text, want, environ=None):
        with self.assertRaises(config.ConfigError) as cm:
            config.loads(text, "f.yml", environ or {})
        self.assertIn(want, str(cm.exception))

    def test_the_repository_deploy_file_loads(self):
        cfg = config.load(DEPLOY_FILE, {})
        self.assertEqual(cfg.env("prod")["limits.memory"], "64m")
        self.assertEqual(cfg.env("staging")["prefix"], "/staging")
        self.assertEqual(cfg.replicas("prod"), ["a", "b"])

    def test_defaults(self):
        cfg = config.loads(GOOD, "f.yml", {})
        self.assertEqual(cfg.env("staging")["watch.window_s"], 60)
        self.assertEqual(cfg.env("staging")["watch.on_unreadable"], "fail")
        self.assertEqual(cfg.host["socket_dir"], "/srv/pier/run")

    def test_unknown_key_with_file_line_and_did_you_mean(self):
        self.bad(GOOD.replace("window_s: 60", "windw_s: 60"),
                 "f.yml:11:7: unknown key environments.prod.watch.windw_s (did you mean watch.window_s?)")
        self.bad(GOOD.replace("  state_dir:", "  stat_dir:"), "f.yml:3:3: unknown key host.stat_dir (did you mean state_dir?)")
        self.bad(GOOD.replace("  staging:", "  stagin:"), "unknown environment stagin (did you mean staging?)")
        self.bad("hots: {}\n" + GOOD, "f.yml:1:1: unknown section hots (did you mean host?)")

    def test_bad_values(self):
        self.bad(GOOD.replace("window_s: 60", "window_s: soon"),
                 "f.yml:11:17: watch.window_s: expected an integer from 0 to 3600, found 'soon'")
        self.bad(GOOD.replace("container_port: 8000", "container_port: 99999"), "container_port: expected an integer from 1 to 65535")
        self.bad(GOOD.replace("prefix: /prod", "prefix: prod"), "prefix: expected a path like /prod")
        self.bad(GOOD.replace("[8000, 8002]", "[8000]"), "ports.blue has 1 ports for 2 replicas")
        self.bad(GOOD.replace("[8011, 8013]", "[8010, 8013]"), "port 8010 is used twice")
        self.bad(GOOD.replace("    prefix: /staging\n", ""), "environments.staging: prefix is required")
        self.bad("environments: [1]\n", "expected prod: and staging:")
        self.bad("host: [\n", "not valid YAML")

    def test_overrides_are_reported(self):
        cfg = config.loads(GOOD, "f.yml", {"PIER_DEPLOY_WATCH_WINDOW_S": "20", "PIER_DEPLOY_PROD_WATCH_WINDOW_S": "5",
                                           "PIER_DEPLOY_STATE_DIR": "/tmp/x"})
        self.assertEqual(cfg.env("prod")["watch.window_s"], 5)
        self.assertEqual(cfg.env("staging")["watch.window_s"], 20)
        self.assertEqual(cfg.host["state_dir"], "/tmp/x")
        self.assertIn("override: prod watch.window_s = 5 (PIER_DEPLOY_PROD_WATCH_WINDOW_S)", cfg.overrides)
        self.bad(GOOD, "PIER_DEPLOY_LIMITS_PIDS: limits.pids: expected an integer", {"PIER_DEPLOY_LIMITS_PIDS": "many"})

    def test_installed_copy_takes_no_overrides(self):
        cfg = config.loads(GOOD, "f.yml", {"PIER_DEPLOY_STATE_DIR": "/tmp/x"}, overrides_allowed=False)
        self.assertEqual(cfg.host["state_dir"], "/var/lib/pier-deploy")
        self.assertTrue(cfg.overrides[0].startswith("ignored"))

    def test_reference_is_generated_and_in_the_docs(self):
        with open(os.path.join(ROOT, "docs", "deploy-file.md")) as f:
            doc = f.read()
        self.assertTrue(config.reference_table() in doc,
                        "docs/deploy-file.md's key table is out of date: paste `deploy/pier-deploy reference`")
        for key in config.KEYS:
            self.assertIn(key.name, doc)


class CommandTest(unittest.TestCase):
    def run_cli(self, *args):
        return subprocess.run([sys.executable, os.path.join(ROOT, "deploy", "pier-deploy"), *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={"PATH": os.environ["PATH"]})

    def test_refusals(self):
        for args, want in [(["deploy", "dev", "v1"], "ENV must be prod"),
                           (["deploy", "prod", "v1;id"], "is not an image tag"),
                           (["deploy", "prod", "$(id)"], "is not an image tag"),
                           (["shell"], "unknown verb 'shell'"),
                           (["deploy", "prod"], "deploy takes 2 argument"),
                           (["--installed", "--file", "/tmp/x", "status"], "--file is not accepted")]:
            p = self.run_cli(*args)
            self.assertEqual(p.returncode, 2, args)
            self.assertIn(want, p.stderr, args)

    def test_check(self):
        p = self.run_cli("check")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("OK (prod, staging)", p.stdout)


if __name__ == "__main__":
    unittest.main()


class DeployFileDriftTest(unittest.TestCase):
    """The deploy file a release ships against the one the host runs with (hostsetup)."""

    def setUp(self):
        from pierdeploy import hostsetup

        self.drift = hostsetup.deploy_file_drift
        with open(DEPLOY_FILE) as f:
            self.text = f.read()

    def test_the_same_file_with_other_comments_agrees(self):
        self.assertEqual(self.drift(self.text, "# a note\n" + self.text.replace("\n", "  \n")), [])

    def test_a_changed_value_is_named_by_its_dotted_key(self):
        import yaml

        d = yaml.safe_load(self.text)
        d["environments"]["prod"]["watch"]["window_s"] = 12345
        d["host"]["new_key"] = 1
        self.assertEqual(self.drift(yaml.safe_dump(d), self.text),
                         ["environments.prod.watch.window_s", "host.new_key"])

    def test_a_file_that_does_not_parse_is_the_whole_file(self):
        self.assertEqual(self.drift("a: [", self.text), ["(the whole file)"])
