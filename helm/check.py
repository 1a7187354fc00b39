#!/usr/bin/env python3
"""Renders helm/affinity and validates what it renders, without helm.

The helm binary is not available from this machine's package sources, so the chart keeps
to a small subset of Helm's template language, and this script renders that subset:
`{{ }}` with `-` trimming, comments, `define`/`include`, `if`/`else if`/`else`, `with`,
`.Values`/`.Release`/`.Chart` fields, pipelines, parentheses, and the functions in
FUNCTIONS. Anything else (an unknown function, a value the chart reads that values.yaml
does not have) is an error, so a chart this cannot render fails CI.

Each case in CASES renders the chart with values.yaml overlaid by the case's values, and
checks that every document is a valid Kubernetes object (kubernetes-validate, strict, for
KUBE_VERSION), that the case's expectations hold, and (with --server) that the rendered
server.toml is accepted by the real affinity-server (unknown keys are refused there).
Cases that must not render check that they fail with the expected message.

    python3 helm/check.py [--server target/release/affinity-server]
"""

import argparse
import base64
import copy
import hashlib
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

try:
    import kubernetes_validate
except ImportError:  # pragma: no cover - reported in main
    kubernetes_validate = None

CHART = Path(__file__).resolve().parent / "affinity"
KUBE_VERSION = "1.30"
MISSING = object()


class TemplateError(Exception):
    pass


# --- lexing and parsing -----------------------------------------------------------------

ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def lex(text, name):
    """Text and action pieces, with `{{-`/`-}}` trimming applied."""
    pieces = []
    pos = 0
    trim_next = False
    for m in ACTION.finditer(text):
        chunk = text[pos:m.start()]
        if trim_next:
            chunk = chunk.lstrip()
        if m.group(1):
            chunk = chunk.rstrip()
        pieces.append(("text", chunk))
        body = m.group(2)
        if not (body.startswith("/*") and body.endswith("*/")):
            pieces.append(("action", body, f"{name}:{text.count(chr(10), 0, m.start()) + 1}"))
        trim_next = bool(m.group(3))
        pos = m.end()
    chunk = text[pos:]
    if trim_next:
        chunk = chunk.lstrip()
    pieces.append(("text", chunk))
    return pieces


def parse(pieces, defines):
    """A node list; `define` blocks go to `defines`."""
    nodes, stack = [], []
    current = nodes

    def open_block(kind, expr, where):
        node = {"kind": kind, "branches": [(expr, [])], "else": None, "where": where}
        current.append(node)
        stack.append((node, current))
        return node["branches"][0][1]

    for piece in pieces:
        if piece[0] == "text":
            if piece[1]:
                current.append({"kind": "text", "text": piece[1]})
            continue
        body, where = piece[1], piece[2]
        word, _, rest = body.partition(" ")
        if word == "define":
            node = {"kind": "define", "name": json.loads(rest.strip()), "body": []}
            stack.append((node, current))
            current = node["body"]
        elif word in ("if", "with", "range"):
            current = open_block(word, rest, where)
        elif word == "else":
            if not stack or stack[-1][0]["kind"] not in ("if", "with"):
                raise TemplateError(f"{where}: else outside if")
            node = stack[-1][0]
            if rest.startswith("if "):
                node["branches"].append((rest[3:], []))
                current = node["branches"][-1][1]
            else:
                node["else"] = []
                current = node["else"]
        elif word == "end":
            if not stack:
                raise TemplateError(f"{where}: end without a block")
            node, current = stack.pop()
            if node["kind"] == "define":
                defines[node["name"]] = node["body"]
        else:
            current.append({"kind": "expr", "expr": body, "where": where})
    if stack:
        raise TemplateError(f"unclosed {stack[-1][0]['kind']}")
    return nodes


TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|(\()|(\))|(\|)|(\$?\.[A-Za-z0-9_.]*|\$)|(-?\d+)|([A-Za-z_][A-Za-z0-9_]*))')


def tokens(expr, where):
    out, pos = [], 0
    expr = expr.strip()
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"{where}: cannot parse {expr[pos:]!r}")
        pos = m.end()
        s, lp, rp, pipe, field, num, ident = m.groups()
        if s is not None:
            out.append(("value", json.loads(s)))
        elif lp:
            out.append(("(",))
        elif rp:
            out.append((")",))
        elif pipe:
            out.append(("|",))
        elif field is not None:
            out.append(("field", field))
        elif num is not None:
            out.append(("value", int(num)))
        elif ident in ("true", "false"):
            out.append(("value", ident == "true"))
        elif ident == "nil":
            out.append(("value", None))
        else:
            out.append(("ident", ident))
    return out


# --- evaluation --------------------------------------------------------------------------


def truthy(v):
    return v not in (None, False, 0, "", MISSING) and not (isinstance(v, (list, dict)) and not v)


def to_toml(value):
    def scalar(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        raise TemplateError(f"toToml: cannot write {v!r}")

    lines = []

    def table(prefix, d):
        for k, v in d.items():
            if not isinstance(v, dict):
                lines.append(f"{k} = {scalar(v)}")
        for k, v in d.items():
            if isinstance(v, dict):
                lines.append("")
                lines.append(f"[{prefix}{k}]")
                table(f"{prefix}{k}.", v)

    table("", value or {})
    return "\n".join(lines).strip("\n")


def go_printf(fmt, *args):
    return re.sub(r"%[sdv]", "{}", fmt).format(*args)


def indent(n, s):
    return "\n".join((" " * n + line) if line else line for line in str(s).split("\n"))


def fail(msg):
    raise TemplateError(f"fail: {msg}")


FUNCTIONS = {
    "quote": lambda v: json.dumps("" if v is None else str(v) if not isinstance(v, bool) else str(v).lower()),
    "default": lambda d, v=None: v if truthy(v) else d,
    "toYaml": lambda v: yaml.safe_dump(v, default_flow_style=False, sort_keys=False).rstrip("\n") if v not in (None, MISSING) else "",
    "toToml": to_toml,
    "nindent": lambda n, s: "\n" + indent(n, s),
    "indent": indent,
    "printf": go_printf,
    "print": lambda *a: "".join(str(x) for x in a),
    "trunc": lambda n, s: s[:n],
    "trimSuffix": lambda suf, s: s[: -len(suf)] if suf and s.endswith(suf) else s,
    "not": lambda v: not truthy(v),
    "and": lambda *a: next((x for x in a if not truthy(x)), a[-1]),
    "or": lambda *a: next((x for x in a if truthy(x)), a[-1]),
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "lt": lambda a, b: a < b,
    "int": lambda v: int(v),
    "add": lambda a, b: int(a) + int(b),
    "div": lambda a, b: int(a) // int(b),
    "b64enc": lambda s: base64.b64encode(str(s).encode()).decode(),
    "sha256sum": lambda s: hashlib.sha256(str(s).encode()).hexdigest(),
    "fail": fail,
    "required": lambda msg, v=None: v if truthy(v) else fail(msg),
}


class Renderer:
    def __init__(self, chart, values, release="release"):
        self.defines = {}
        self.templates = {}
        meta = yaml.safe_load((chart / "Chart.yaml").read_text())
        self.root = {
            "Values": values,
            "Release": {"Name": release, "Namespace": "default", "Service": "Helm"},
            "Chart": {"Name": meta["name"], "Version": meta["version"], "AppVersion": meta["appVersion"]},
        }
        for path in sorted((chart / "templates").iterdir()):
            nodes = parse(lex(path.read_text(), path.name), self.defines)
            if not path.name.startswith("_"):
                self.templates[path.name] = nodes

    def field(self, path, dot, where):
        if path == "$":
            return self.root
        base = self.root if path.startswith("$") else dot
        parts = [p for p in path.lstrip("$").split(".") if p]
        value = base
        for i, part in enumerate(parts):
            if isinstance(value, dict) and part in value:
                value = value[part]
            elif isinstance(value, dict) and i == len(parts) - 1:
                # Like Helm, a missing key reads as nil; writing one out is an error.
                return MISSING
            else:
                raise TemplateError(f"{where}: {path} does not exist")
        return value

    def call(self, name, args, dot, where):
        if name == "include":
            if len(args) != 2 or args[0] not in self.defines:
                raise TemplateError(f"{where}: include of unknown template {args[:1]}")
            return self.render_nodes(self.defines[args[0]], args[1])
        if name not in FUNCTIONS:
            raise TemplateError(f"{where}: unknown function {name!r} (this renderer knows {sorted(FUNCTIONS) + ['include']})")
        args = [None if a is MISSING else a for a in args]
        try:
            return FUNCTIONS[name](*args)
        except TemplateError:
            raise
        except Exception as e:
            raise TemplateError(f"{where}: {name}: {e}") from e

    def command(self, toks, dot, where, piped=MISSING):
        """Evaluates one command of a pipeline (a function call or a single operand)."""
        args, i = [], 0
        while i < len(toks):
            tok = toks[i]
            if tok[0] == "(":
                depth, j = 1, i + 1
                while depth:
                    if j >= len(toks):
                        raise TemplateError(f"{where}: unbalanced parentheses")
                    depth += {"(": 1, ")": -1}.get(toks[j][0], 0)
                    j += 1
                args.append(("value", self.pipeline(toks[i + 1 : j - 1], dot, where)))
                i = j
            else:
                args.append(tok)
                i += 1
        if args and args[0][0] == "ident":
            values = [self.operand(a, dot, where) for a in args[1:]]
            if piped is not MISSING:
                values.append(piped)
            return self.call(args[0][1], values, dot, where)
        if len(args) != 1 or piped is not MISSING:
            raise TemplateError(f"{where}: expected a function call")
        return self.operand(args[0], dot, where)

    def operand(self, tok, dot, where):
        if tok[0] == "value":
            return tok[1]
        if tok[0] == "field":
            return self.field(tok[1], dot, where)
        raise TemplateError(f"{where}: unexpected {tok}")

    def pipeline(self, toks, dot, where):
        commands, current, depth = [], [], 0
        for tok in toks:
            depth += {"(": 1, ")": -1}.get(tok[0], 0)
            if tok[0] == "|" and depth == 0:
                commands.append(current)
                current = []
            else:
                current.append(tok)
        commands.append(current)
        value = self.command(commands[0], dot, where)
        for cmd in commands[1:]:
            value = self.command(cmd, dot, where, piped=value)
        return value

    def eval(self, expr, dot, where):
        return self.pipeline(tokens(expr, where), dot, where)

    def render_nodes(self, nodes, dot):
        out = []
        for node in nodes:
            kind = node["kind"]
            if kind == "text":
                out.append(node["text"])
            elif kind == "expr":
                value = self.eval(node["expr"], dot, node["where"])
                if value is MISSING or value is None:
                    raise TemplateError(f"{node['where']}: {node['expr']!r} has no value")
                out.append(str(value).lower() if isinstance(value, bool) else str(value))
            elif kind in ("if", "with"):
                for expr, body in node["branches"]:
                    value = self.eval(expr, dot, node["where"])
                    if truthy(value):
                        out.append(self.render_nodes(body, value if kind == "with" else dot))
                        break
                else:
                    if node["else"] is not None:
                        out.append(self.render_nodes(node["else"], dot))
            elif kind == "range":
                for item in self.eval(node["branches"][0][0], dot, node["where"]) or []:
                    out.append(self.render_nodes(node["branches"][0][1], item))
        return "".join(out)

    def render(self):
        return {name: self.render_nodes(nodes, self.root) for name, nodes in self.templates.items()}


# --- checks ------------------------------------------------------------------------------


def merge(base, overlay):
    out = copy.deepcopy(base)
    for k, v in (overlay or {}).items():
        out[k] = merge(out.get(k), v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def documents(rendered):
    docs = []
    for name, text in rendered.items():
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append((name, doc))
    return docs


def find(docs, kind):
    return [d for _, d in docs if d["kind"] == kind]


def container(docs):
    (deploy,) = find(docs, "Deployment")
    return deploy["spec"]["template"]["spec"]["containers"][0]


def expect_defaults(docs):
    c = container(docs)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "grpc" in c[probe], f"{probe} is not a gRPC probe"
    assert c["livenessProbe"]["grpc"]["service"] == "liveness", "liveness must not wait for the model"
    assert "--plaintext" in c["args"] and "--events-dir" in c["args"]
    assert not find(docs, "HorizontalPodAutoscaler") and not find(docs, "CronJob")
    assert len(find(docs, "PersistentVolumeClaim")) == 2 and find(docs, "PodDisruptionBudget")
    (deploy,) = find(docs, "Deployment")
    assert deploy["spec"]["replicas"] == 1 and deploy["spec"]["strategy"]["type"] == "Recreate"


def expect_read_replicas(docs):
    c = container(docs)
    assert "--no-ingest" in c["args"] and "--api-keys-file" in c["args"] and "--tls-cert" in c["args"]
    assert "httpGet" in c["livenessProbe"], "TLS: probes go over HTTP on the metrics port"
    (hpa,) = find(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["maxReplicas"] == 10
    (secret,) = find(docs, "Secret")
    assert base64.b64decode(secret["data"]["keys"]).decode().startswith("read ")
    (deploy,) = find(docs, "Deployment")
    assert "replicas" not in deploy["spec"], "the HPA owns the replica count"
    assert deploy["spec"]["template"]["spec"]["initContainers"][0]["name"] == "fetch-model"


def expect_trainer(docs):
    (cron,) = find(docs, "CronJob")
    args = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--events-log" in args and "--tune-budget" in args, args


CASES = [
    ("defaults", {}, expect_defaults, None),
    (
        "read replicas with TLS, keys, autoscaling and a fetched model",
        {
            "ingest": {"enabled": False},
            "autoscaling": {"enabled": True, "maxReplicas": 10},
            "auth": {"enabled": True, "keys": "read some-long-read-key-0123\n"},
            "tls": {"enabled": True, "existingSecret": "affinity-tls"},
            "model": {"fetchUrl": "https://objects.example.com/models/latest.tar.gz"},
            "service": {"annotations": {"networking.gke.io/load-balancer-type": "Internal"}},
            "config": {"limits": {"max_concurrent_requests": 256, "drain_secs": 30}},
        },
        expect_read_replicas,
        None,
    ),
    (
        "trainer CronJob",
        {"trainer": {"enabled": True, "extraArgs": ["--tune-budget", "40"], "itemsFile": "items.csv"}},
        expect_trainer,
        None,
    ),
    ("autoscaling with ingest on is refused", {"autoscaling": {"enabled": True}}, None, "ingest.enabled=false"),
    ("several replicas with ingest on are refused", {"replicaCount": 3}, None, "ingest.enabled=false"),
    ("TLS without a secret is refused", {"tls": {"enabled": True}}, None, "tls.existingSecret"),
    ("a trainer without a model volume is refused", {"trainer": {"enabled": True}, "model": {"demo": True}}, None, "model claim"),
]


def self_test():
    """The renderer refuses what it does not know."""
    defines = {}
    r = Renderer.__new__(Renderer)
    r.defines, r.root = defines, {"Values": {"a": {"b": 1}}}
    for bad, why in [("{{ .Values.a.c }}", "has no value"), ("{{ .Values.x.y }}", "does not exist"), ("{{ frobnicate 1 }}", "unknown function")]:
        try:
            r.render_nodes(parse(lex(bad, "t"), defines), r.root)
        except TemplateError as e:
            assert why in str(e), (bad, e)
        else:
            raise AssertionError(f"{bad} rendered")
    out = r.render_nodes(parse(lex('x{{- if .Values.a.b }} {{ .Values.a.b | add 2 }}{{ else }}n{{ end -}} y', "t"), defines), r.root)
    assert out == "x 3y", out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", help="affinity-server binary to check each rendered server.toml with")
    args = ap.parse_args()
    if kubernetes_validate is None:
        sys.exit("kubernetes-validate is not installed (pip install kubernetes-validate pyyaml)")
    self_test()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    failures = 0
    for name, overlay, expect, refused in CASES:
        try:
            docs = documents(Renderer(CHART, merge(values, overlay)).render())
        except TemplateError as e:
            if refused and refused in str(e):
                print(f"ok    {name}: {e}")
                continue
            print(f"FAIL  {name}: {e}")
            failures += 1
            continue
        if refused:
            print(f"FAIL  {name}: rendered, expected a refusal mentioning {refused!r}")
            failures += 1
            continue
        try:
            for template, doc in docs:
                try:
                    kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
                except Exception as e:
                    raise AssertionError(f"{template}: {doc['kind']} is not valid for Kubernetes {KUBE_VERSION}: {e}") from e
            expect(docs)
            if args.server:
                (config,) = find(docs, "ConfigMap")
                with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
                    f.write(config["data"]["server.toml"])
                    f.flush()
                    out = subprocess.run([args.server, "--config", f.name, "--print-config"], capture_output=True, text=True)
                    assert out.returncode == 0, f"affinity-server refuses the rendered server.toml: {out.stderr.strip()}"
            kinds = ", ".join(sorted(d["kind"] for _, d in docs))
            print(f"ok    {name}: {len(docs)} objects ({kinds})")
        except AssertionError as e:
            print(f"FAIL  {name}: {e}")
            failures += 1
    if failures:
        sys.exit(f"{failures} chart check(s) failed")


if __name__ == "__main__":
    main()
