"""The live state, read from the system and nothing else: an environment's `current` link
(what nginx connects to) and the labels of its containers. Pure functions over what
engine.py reads from Docker, so they can be unit-tested.

The rollback rule (docs/deploys.md#roll-back): every release's containers carry
`pier.previous`, the tags that were live before it, newest first (at most CHAIN_MAX).
  deploy TAG            new chain = [current] + current's chain
  rollback              target = current's chain[0]; new chain = current's chain[1:]
  rollback TAG          like a deploy of TAG: new chain = [current] + current's chain
So a second rollback goes one further back, never forward to the release just left.
"""

CHAIN_MAX = 20
LABELS = ("pier.env", "pier.slot", "pier.replica", "pier.tag", "pier.image", "pier.previous", "pier.deployed",
          "pier.action", "pier.stop-timeout")


def parse_chain(label):
    return [t for t in (label or "").split() if t]


def format_chain(chain):
    return " ".join(chain[:CHAIN_MAX])


def next_chain(action, live_tag, live_chain, target=None):
    """The chain a new release's containers carry, and the tag a rollback goes to.
    Returns (tag, chain); raises ValueError when a rollback has nowhere to go."""
    live_chain = list(live_chain or [])
    if action == "rollback" and target is None:
        if not live_tag:
            raise ValueError("nothing is live: nothing to roll back from")
        if not live_chain:
            raise ValueError(f"the live release {live_tag} names no release before it (its pier.previous label is empty): give the TAG")
        return live_chain[0], live_chain[1:]
    chain = ([live_tag] if live_tag else []) + live_chain
    if target is not None and chain and chain[0] == target:
        chain = chain[1:]  # redeploying the live tag keeps its history
    return target, chain[:CHAIN_MAX]


class Slot:
    """One slot of one environment as Docker shows it."""

    def __init__(self, name, containers):
        self.name = name
        self.containers = containers  # [{name, id, labels, running, status, health, restarts, exit}]

    def tag(self):
        tags = {c["labels"].get("pier.tag") for c in self.containers}
        return tags.pop() if len(tags) == 1 else None

    def label(self, key):
        """The replicas' common value of a label ("" when they disagree); pier.deployed,
        which differs by the second between replicas, is the earliest."""
        vals = sorted({c["labels"].get(key, "") for c in self.containers})
        if key == "pier.deployed":
            return vals[0] if vals else ""
        return vals[0] if len(vals) == 1 else ""

    def running(self):
        return [c for c in self.containers if c["running"]]


class EnvState:
    def __init__(self, env, link, slots):
        self.env, self.link, self.slots = env, link, slots

    def live(self):
        return self.slots.get(self.link) if self.link in ("blue", "green") else None

    def idle_name(self):
        return "green" if self.link == "blue" else "blue"

    def problems(self, replicas, deploying=False):
        """What is not as a finished deploy leaves it, each a sentence."""
        out = []
        live = self.live()
        if self.link is None:
            if any(s.containers for s in self.slots.values()):
                out.append("no `current` link, yet containers exist")
            return out
        if live is None or not live.containers:
            out.append(f"`current` -> {self.link}, but the {self.link} slot has no containers")
        else:
            missing = set(replicas) - {c["labels"].get("pier.replica") for c in live.running()}
            if missing:
                out.append(f"live slot {self.link}: replica(s) {', '.join(sorted(missing))} not running")
            if live.tag() is None:
                out.append(f"live slot {self.link}: its containers disagree on the tag")
        idle = self.slots.get(self.idle_name())
        if idle and idle.running() and not deploying:
            out.append(f"idle slot {idle.name} has running containers ({', '.join(c['name'] for c in idle.running())}): "
                       "left by an interrupted deploy; the next deploy removes them")
        return out


def images_to_keep(states, keep):
    """Tags whose images a prune must keep: per environment the live tag and the first
    KEEP-1 tags of its chain (a rollback's targets), and every tag a container uses."""
    tags = set()
    for st in states:
        live = st.live()
        if live is not None and live.tag():
            tags.add(live.tag())
            tags.update(parse_chain(live.label("pier.previous"))[: max(keep - 1, 0)])
        for s in st.slots.values():
            for c in s.containers:
                if c["labels"].get("pier.tag"):
                    tags.add(c["labels"]["pier.tag"])
    return tags
