"""Unit tests of the deploy keys' gate (deploy/host/pier-deploy-gate) and of the check that
only main's commits reach production (deploy/pierdeploy/provenance.py, on a real git
repository made here).

    python3 -m unittest discover -s test/delivery/unit      (ci/lint.sh check delivery-unit)
"""

import importlib.machinery
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "deploy"))

from pierdeploy import provenance  # noqa: E402

_loader = importlib.machinery.SourceFileLoader("gate", os.path.join(ROOT, "deploy", "host", "pier-deploy-gate"))
_spec = importlib.util.spec_from_loader("gate", _loader)
gate = importlib.util.module_from_spec(_spec)
_loader.exec_module(gate)


class GateTest(unittest.TestCase):
    def setUp(self):
        self.logged = []
        gate.log = self.logged.append

    def refused(self, key, cmd, why):
        with self.assertRaises(SystemExit) as cm:
            gate.check(key, cmd)
        self.assertEqual(cm.exception.code, 2)
        self.assertIn(why, self.logged[-1])

    def test_accepted(self):
        self.assertEqual(gate.check("prod", "pier-deploy deploy prod 3f9c2e1a7b4d"), ["deploy", "prod", "3f9c2e1a7b4d"])
        self.assertEqual(gate.check("prod", "deploy production v1 --no-watch"), ["deploy", "prod", "v1", "--no-watch"])
        self.assertEqual(gate.check("staging", "rollback staging"), ["rollback", "staging"])
        self.assertEqual(gate.check("staging", "rollback staging v2"), ["rollback", "staging", "v2"])
        self.assertEqual(gate.check("prod", "status"), ["status", "prod"])
        self.assertEqual(gate.check("prod", "history prod"), ["history", "prod"])
        self.assertEqual(gate.check("prod", "logs prod --lines 50"), ["logs", "prod", "--lines", "50"])

    def test_the_staging_key_cannot_touch_prod(self):
        for cmd in ("deploy prod v1", "rollback prod", "status prod", "history production", "logs prod"):
            self.refused("staging", cmd, "this is the staging key: it cannot touch prod")

    def test_no_shell_and_unknown_verbs(self):
        self.refused("prod", "", "no command")
        for cmd in ("bash", "sh -i", "docker ps", "sudo -l", "scp -t /tmp", "pier-deploy setup", "deploy"):
            with self.subTest(cmd=cmd):
                with self.assertRaises(SystemExit):
                    gate.check("prod", cmd)

    def test_metacharacters(self):
        for cmd in ("status; id", "deploy prod $(id)", "deploy prod `id`", "status | cat", "status && id",
                    "deploy prod v1 > /tmp/x", "deploy prod 'v1'", "status\nid", "history prod *"):
            with self.subTest(cmd=cmd):
                self.refused("prod", cmd, "characters other than")

    def test_bad_arguments(self):
        self.refused("prod", "deploy prod", "usage: deploy ENV TAG")
        self.refused("prod", "deploy prod v1 --file", "not a plain word")
        self.refused("prod", "deploy prod v1 extra", "usage: deploy ENV TAG")
        self.refused("prod", "deploy dev v1", "unknown environment")
        self.refused("prod", "bash -i", "unknown verb 'bash'")
        self.refused("prod", "logs prod --lines many", "usage: logs")
        self.refused("prod", "deploy prod -v1", "not a plain word")


def sh(cwd, *args):
    return subprocess.run(args, cwd=cwd, check=True, stdout=subprocess.PIPE, text=True,
                          env={"PATH": os.environ["PATH"], "HOME": cwd, "GIT_CONFIG_NOSYSTEM": "1"}).stdout.strip()


@unittest.skipUnless(shutil.which("git"), "git is not installed")
class ProvenanceTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.src = os.path.join(self.tmp, "src")
        os.makedirs(self.src)
        sh(self.src, "git", "init", "-q", "-b", "main")
        commit = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m"]
        sh(self.src, *commit, "one")
        self.one = sh(self.src, "git", "rev-parse", "HEAD")
        sh(self.src, "git", "checkout", "-q", "-b", "develop")
        sh(self.src, *commit, "two")
        self.dev = sh(self.src, "git", "rev-parse", "HEAD")
        sh(self.src, "git", "checkout", "-q", "main")
        self.repo = os.path.join(self.tmp, "repo.git")
        self.url = "file://" + self.src

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def test_a_main_commit_passes(self):
        self.assertEqual(provenance.check(self.repo, self.url, "main", self.one[:12]), self.one)

    def test_a_develop_commit_is_refused(self):
        with self.assertRaises(provenance.NotOnMain) as cm:
            provenance.check(self.repo, self.url, "main", self.dev[:12])
        self.assertIn("not on main", str(cm.exception))

    def test_once_merged_it_passes(self):
        sh(self.src, "git", "merge", "-q", "--ff-only", "develop")
        self.assertEqual(provenance.check(self.repo, self.url, "main", self.dev), self.dev)

    def test_an_unreachable_repository_refuses(self):
        with self.assertRaises(provenance.NotOnMain):
            provenance.check(self.repo, "file://" + self.tmp + "/nothing", "main", self.one)

    def test_commit_of(self):
        self.assertEqual(provenance.commit_of("3F9C2E1A7B4D", ""), "3f9c2e1a7b4d")
        self.assertEqual(provenance.commit_of("v1.2.0", "3f9c2e1a7b4d5e6f"), "3f9c2e1a7b4d5e6f")
        self.assertEqual(provenance.commit_of("3f9c2e1a7b4d", "3f9c2e1a7b4d5e6f"), "3f9c2e1a7b4d")
        with self.assertRaises(provenance.NotOnMain):
            provenance.commit_of("3f9c2e1a7b4d", "aaaaaaaaaaaa")  # the label says another commit
        with self.assertRaises(provenance.NotOnMain):
            provenance.commit_of("latest", "")


if __name__ == "__main__":
    unittest.main()
