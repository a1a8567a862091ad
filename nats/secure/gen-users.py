#!/usr/bin/env python3
"""Writes the `authorization` block of the secure nats-server config (users.conf) from
identities.txt (or the file given as the first argument): one nkey user per identity, with the
subject permissions of its kind.

Every identity's replies arrive on its own inbox prefix `_INBOX_<public key>` (the Mycosynth
clients set it), so no identity can read another's replies.
"""
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
CONFIG, SCHEMAS, POLICY, KEYS = (
    "mycosynth-config", "mycosynth-schemas", "mycosynth-policy", "mycosynth-keys")
AUDIT = "MYCOSYNTH_AUDIT"


def validator(key):
    return {
        "publish": {
            "allow": ["$JS.API.>", "$JS.ACK.>", "$JS.FC.>",
                      f"$KV.{CONFIG}.>", f"$KV.{SCHEMAS}.>", f"$KV.{POLICY}.>", f"$KV.{KEYS}.>",
                      "mycosynth.events.>", "mycosynth.schema.>", "mycosynth.audit.>", "$SRV.>",
                      # The notice of each change-request step.
                      "mycosynth.requests.>",
                      # Change requests forwarded to the instance that owns their namespace.
                      "mycosynth.api.direct.>",
                      # Lag probes of the sites' config mirrors (`serve --site`).
                      f"$JS.*.API.STREAM.INFO.KV_{CONFIG}"],
            # The audit stream is append-only for the validator: only nats-admin may purge,
            # delete or rewrite it.
            "deny": [f"$JS.API.STREAM.PURGE.{AUDIT}", f"$JS.API.STREAM.DELETE.{AUDIT}",
                     f"$JS.API.STREAM.UPDATE.{AUDIT}", f"$JS.API.STREAM.MSG.DELETE.{AUDIT}"],
        },
        "subscribe": {"allow": ["mycosynth.api.>", "mycosynth.receipts.>", "$SRV.>",
                                "mycosynth.site.replies.>", f"_INBOX_{key}.>"]},
        # Replies to the requests it serves.
        "allow_responses": True,
    }


def site(key, domain, hub, data_keys):
    """A site's leaf node, as the hub sees its leaf connection: `publish` is what the site may
    send into the hub, `subscribe` what the hub may send to the site. Read-only: it may only
    create the consumers of its mirrors (and answer their flow control), and answer the hub's
    lag probe of its own config mirror on its own reply subjects. No KV subject, no validator
    API, no event subject: a site can never write."""
    streams = [f"KV_{CONFIG}", f"KV_{SCHEMAS}"] + ([f"KV_{KEYS}"] if data_keys else [])
    publish = []
    for stream in streams:
        publish += [f"$JS.{hub}.API.CONSUMER.CREATE.{stream}",
                    f"$JS.{hub}.API.CONSUMER.CREATE.{stream}.>",
                    f"$JS.FC.{stream}.>", f"$JS.FC.{hub}.*.{stream}.>"]
    publish.append(f"mycosynth.site.replies.{domain}.>")
    return {
        "publish": {"allow": publish},
        # Mirror deliveries, the replies to its consumer creations, the hub's lag probe.
        "subscribe": {"allow": ["$JS.M.>", "$JSC.R.>",
                                f"$JS.{domain}.API.STREAM.INFO.KV_{CONFIG}"]},
    }


def operator(key):
    return {
        "publish": {"allow": ["mycosynth.api.>"]},
        # Its replies, and the change-request notices (for the console and chat bots).
        "subscribe": {"allow": [f"_INBOX_{key}.>", "mycosynth.requests.>"]},
    }


def service(key, ns):
    cfg, sch, keys = f"KV_{CONFIG}", f"KV_{SCHEMAS}", f"KV_{KEYS}"
    return {
        "publish": {"allow": [
            f"$JS.API.STREAM.INFO.{cfg}", f"$JS.API.STREAM.INFO.{sch}",
            f"$JS.API.STREAM.INFO.{keys}",
            # Reads of its own namespace only: direct gets of its keys, and named consumers
            # whose filter (part of the API subject) is inside its namespace.
            f"$JS.API.DIRECT.GET.{cfg}.$KV.{CONFIG}.{ns}.>",
            f"$JS.API.DIRECT.GET.{sch}.$KV.{SCHEMAS}.{ns}",
            f"$JS.API.DIRECT.GET.{keys}.$KV.{KEYS}.{ns}",
            f"$JS.API.CONSUMER.CREATE.{cfg}.*.$KV.{CONFIG}.{ns}.>",
            f"$JS.API.CONSUMER.CREATE.{sch}.*.$KV.{SCHEMAS}.{ns}",
            f"$JS.API.CONSUMER.MSG.NEXT.{cfg}.*", f"$JS.API.CONSUMER.MSG.NEXT.{sch}.*",
            f"$JS.API.CONSUMER.DELETE.{cfg}.*", f"$JS.API.CONSUMER.DELETE.{sch}.*",
            f"$JS.FC.{cfg}.>", f"$JS.FC.{sch}.>",
            f"mycosynth.receipts.*.{ns}",
        ]},
        "subscribe": {"allow": [f"mycosynth.events.*.{ns}", f"mycosynth.schema.{ns}",
                                # At a site: the heads and schemas its mirrors republish.
                                f"mycosynth.site.heads.*.{ns}", f"mycosynth.site.schemas.{ns}",
                                f"_INBOX_{key}.>"]},
    }


def main():
    users = []
    source = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "identities.txt"
    for line in source.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        kind, name, key, *rest = line.split()
        if kind == "nats-admin":
            user = {"nkey": key}
        elif kind == "validator":
            user = {"nkey": key, "permissions": validator(key)}
        elif kind == "operator":
            user = {"nkey": key, "permissions": operator(key)}
        elif kind == "service" and len(rest) == 1:
            user = {"nkey": key, "permissions": service(key, rest[0])}
        elif kind == "site" and len(rest) in (2, 3) and rest[2:] in ([], ["data-keys"]):
            user = {"nkey": key, "permissions": site(key, rest[0], rest[1], rest[2:] != [])}
        else:
            sys.exit(f"identities.txt: cannot read {line!r}")
        users.append((name, kind, user))
    out = ["# GENERATED by gen-users.py from identities.txt; do not edit by hand.",
           "authorization {", "  users: ["]
    for name, kind, user in users:
        out.append(f"    # {name} ({kind})")
        out.append("    " + json.dumps(user) + ",")
    out += ["  ]", "}", ""]
    sys.stdout.write("\n".join(out))


if __name__ == "__main__":
    main()
