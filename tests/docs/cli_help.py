#!/usr/bin/python3
"""Every sluice command explains itself, and its help agrees with its parser
and with the README.

1. `sluice CMD --help` and `sluice CMD -h` (and `sluice dead list --help`
   and the other subcommands) exit 0 and print, on stdout, a usage line
   (`usage: sluice CMD`) and an example.
2. Every option a command's parser accepts is in its help, taking a value
   there (`  --timeout DURATION`) exactly when the parser takes one: the
   options are read from src/cli/*.c, in the command's function `cmd_CMD`
   and every function of its file that it names (getopt_long tables, the
   flags given to cli_parse, which adds --redis, --queue and
   --redis-password-file, and options compared by hand). main() decides
   whether an argument is a value by the help, so the two must agree.
3. Every `--option` the README shows for a command is in that command's
   help: in the CLI block under "## Using it" (a command's line and the
   comment lines under it), and wherever else README's code (blocks and
   `inline` spans) writes `sluice CMD ... --option`.
4. `sluice --help` and `sluice help` print the general usage (with
   `--webhook`, `--default` and `sluice help TOPIC`); `sluice help items`
   names every field of docs/item.schema.json; `sluice help limits` and
   `sluice help exit-codes` exit 0; an unknown topic exits 2 and lists the
   topics; `--help` given as an option's value, or after `--`, is not a
   request for help.

Prints what is wrong, command by command; exit 1 if anything is.

usage: SLUICE_BIN=build/sluice cli_help.py
"""

import glob
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SLUICE = os.environ.get("SLUICE_BIN", os.path.join(ROOT, "build", "sluice"))
COMMANDS = ["submit", "worker", "serve", "status", "watch", "results", "log", "item", "batches", "cancel",
            "pause", "resume", "retry", "repair", "dead", "workers", "stats", "limit", "library", "demo",
            "version", "help"]
SUBCOMMANDS = [["dead", "list"], ["dead", "requeue"], ["dead", "purge"], ["limit", "set"], ["limit", "ls"],
               ["limit", "rm"], ["library", "load"], ["library", "check"]]
COMMON = {"redis": True, "queue": True, "redis-password-file": True}  # what cli_parse adds; all take a value
OPTION = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)")

problems = []


def problem(what):
    problems.append(what)


def run(args, stdin=None):
    env = dict(os.environ)
    env.pop("SLUICE_REDIS", None)
    p = subprocess.run([SLUICE] + args, input=stdin, capture_output=True, text=True, timeout=30, env=env)
    return p.returncode, p.stdout, p.stderr


# ---- the help texts ----

def help_options(text):
    """{option: takes a value} from the option lines of a help text."""
    opts = {}
    for line in text.splitlines():
        m = re.match(r"  --([a-z][a-z0-9-]*)( \S)?", line)
        if m:
            opts[m.group(1)] = m.group(2) is not None
    return opts


def check_help_pages():
    helps = {}
    for cmd in COMMANDS:
        for flag in ("--help", "-h"):
            rc, out, err = run([cmd, flag])
            if rc != 0:
                problem("sluice %s %s: exit %d (expected 0): %s" % (cmd, flag, rc, err.strip()[:200]))
                continue
            if not re.search(r"^usage: sluice %s\b" % cmd, out, re.M):
                problem("sluice %s %s: no line \"usage: sluice %s ...\" on stdout" % (cmd, flag, cmd))
            if not re.search(r"^Examples?:\n  \S", out, re.M):
                problem("sluice %s %s: no example" % (cmd, flag))
            helps[cmd] = out
    for args in SUBCOMMANDS:
        rc, out, err = run(args + ["--help"])
        if rc != 0 or out != helps.get(args[0]):
            problem("sluice %s --help: exit %d, or not the help of sluice %s" % (" ".join(args), rc, args[0]))
    return {cmd: help_options(text) for cmd, text in helps.items()}


# ---- the parsers ----

def functions(path):
    """{name: body} of the functions defined in a C file (bodies end at a '}' in column 0)."""
    text = open(path, encoding="utf-8").read()
    out = {}
    for m in re.finditer(r"^(?:static\s+)?[A-Za-z_][\w \t*]*?\b(\w+)\(([^;{}]*?)\)\s*\{", text, re.M | re.S):
        end = text.find("\n}\n", m.end())
        out[m.group(1)] = text[m.start():end if end >= 0 else len(text)]
    return out


def parser_options():
    """{command: {option: takes a value}} as the parsers of src/cli/*.c accept them."""
    files = {path: functions(path) for path in sorted(glob.glob(os.path.join(ROOT, "src", "cli", "*.c")))}
    found = {}
    for cmd in COMMANDS:
        entry = "cmd_" + cmd
        fns = next((f for f in files.values() if entry in f), None)
        opts = {}
        if fns is None:
            found[cmd] = opts  # version: main() itself; takes nothing
            continue
        seen, todo = set(), [entry]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            body = fns[name]
            todo += [f for f in fns if f not in seen and re.search(r"\b%s\b" % re.escape(f), body)]
            for m in re.finditer(r'\{"([a-z][a-z0-9-]*)",\s*(required_argument|no_argument|optional_argument)',
                                 body):
                opts[m.group(1)] = m.group(2) != "no_argument"
            for m in re.finditer(r'\{"([a-z][a-z0-9-]*)",\s*([01]),', body):
                opts[m.group(1)] = m.group(2) == "1"
            for m in re.finditer(r'strcmp\(argv\[\w+\],\s*"--([a-z][a-z0-9-]*)"\)', body):
                opts[m.group(1)] = False
            if "cli_parse(" in body:
                opts.update(COMMON)
        found[cmd] = opts
    return found


def check_parsers(helps):
    parsed = parser_options()
    for cmd in COMMANDS:
        if cmd not in helps:
            continue
        if cmd not in ("version", "help") and not parsed.get(cmd):
            problem("%s: no option found in src/cli/*.c (has its parser moved?)" % cmd)
        for opt, valued in sorted(parsed.get(cmd, {}).items()):
            if opt not in helps[cmd]:
                problem("sluice %s accepts --%s, which its --help does not list" % (cmd, opt))
            elif helps[cmd][opt] != valued:
                problem("sluice %s --%s %s a value, but its --help line %s" % (
                    cmd, opt, "takes" if valued else "takes no", "names none" if valued else "names one"))
        for opt in sorted(set(helps[cmd]) - set(parsed.get(cmd, {}))):
            problem("sluice %s --help lists --%s, which the command does not accept" % (cmd, opt))
    return parsed


# ---- the README ----

def strip_quotes(s):
    return re.sub(r"'[^']*'|\"(?:[^\"\\]|\\.)*\"", "''", s)


def readme_mentions():
    """[(command, option, where)] for every option README's code shows for a sluice command."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    found = []
    cmd_re = re.compile(r"(?<![\w/.$-])sluice\s+(%s)\b" % "|".join(COMMANDS))

    def segments(code, where):
        marks = list(cmd_re.finditer(code))
        for i, m in enumerate(marks):
            seg = code[m.end():marks[i + 1].start() if i + 1 < len(marks) else len(code)]
            for o in OPTION.finditer(strip_quotes(seg)):
                found.append((m.group(1), o.group(1), where))

    blocks = list(re.finditer(r"^```[^\n]*\n(.*?)^```", text, re.M | re.S))
    using = text.find("\n## Using it")
    cli = next((b for b in blocks if b.start() > using), None) if using >= 0 else None
    if cli is None:
        problem("README.md: no code block under \"## Using it\" (the CLI block)")
    else:
        # the CLI block: a command's line and the comment lines under it
        current = None
        for line in cli.group(1).splitlines():
            code = line.split("#", 1)[0]
            m = cmd_re.search(code)
            if m:
                current = m.group(1)
            elif not line.lstrip().startswith("#"):
                current = None
            if current:
                rest = line[m.end():] if m else line
                for o in OPTION.finditer(strip_quotes(rest)):
                    found.append((current, o.group(1), "README's CLI block"))
    for b in blocks:
        if cli is not None and b.start() == cli.start():
            continue
        body = re.sub(r"\\\n", " ", b.group(1))  # continued shell lines
        for line in body.splitlines():
            segments(line.split(" #", 1)[0], "README line %d" % (text.count("\n", 0, b.start()) + 2))
    prose = text
    for b in reversed(blocks):
        prose = prose[:b.start()] + "\n" * b.group(0).count("\n") + prose[b.end():]
    for m in re.finditer(r"`([^`\n]+)`", prose):
        segments(m.group(1), "README line %d" % (prose.count("\n", 0, m.start()) + 1))
    return found


def check_readme(helps):
    seen = 0
    for cmd, opt, where in readme_mentions():
        seen += 1
        if cmd in helps and opt not in helps[cmd]:
            problem("%s shows sluice %s --%s, which sluice %s --help does not list" % (where, cmd, opt, cmd))
    if seen < 40:
        problem("README.md: only %d options found for sluice commands (is the CLI block still there?)" % seen)
    return seen


# ---- the general usage and the topics ----

def check_general():
    for args in (["--help"], ["-h"], ["help"]):
        rc, out, err = run(args)
        if rc != 0 or not out.startswith("usage: sluice COMMAND"):
            problem("sluice %s: exit %d, or not the general usage on stdout" % (" ".join(args), rc))
        for want in ("--webhook", "--default", "sluice help TOPIC", "COMMAND --help"):
            if want not in out:
                problem("sluice %s: the general usage does not mention %s" % (" ".join(args), want))
    rc, out, err = run([])
    if rc != 2 or not err.startswith("usage: sluice COMMAND"):
        problem("sluice alone: exit %d (expected 2, the usage on stderr)" % rc)
    schema = json.load(open(os.path.join(ROOT, "docs", "item.schema.json"), encoding="utf-8"))
    rc, out, err = run(["help", "items"])
    if rc != 0:
        problem("sluice help items: exit %d" % rc)
    for field in schema["properties"]:
        if not re.search(r"^  %s\b" % field, out, re.M):
            problem("sluice help items: no line for the item field %s (docs/item.schema.json)" % field)
    rc, out, err = run(["help", "limits"])
    for want in ("--burst", "--concurrency", "--default", "rate_key", "limit ls", "limit rm"):
        if rc != 0 or want not in out:
            problem("sluice help limits: exit %d, or %s not explained" % (rc, want))
    rc, out, err = run(["help", "exit-codes"])
    for code in ("0", "1", "2", "3"):
        if rc != 0 or not re.search(r"^  %s  \S" % code, out, re.M):
            problem("sluice help exit-codes: exit %d, or no line for exit code %s" % (rc, code))
    rc, out, err = run(["help", "no-such-topic"])
    if rc != 2 or "items" not in err or "exit-codes" not in err:
        problem("sluice help no-such-topic: exit %d (expected 2, listing the topics): %s" % (rc, err.strip()))
    rc, out, err = run(["help", "submit"])
    if rc != 0 or not out.startswith("usage: sluice submit"):
        problem("sluice help submit: exit %d, or not the help of submit" % rc)


def check_not_help():
    """--help as an option's value, or after --, is no request for help."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        f.write('{"type":"noop","payload":1}\n')
    try:
        rc, out, err = run(["submit", "--check", "--name", "--help", f.name])
        if rc != 0 or "usage:" in out:
            problem("sluice submit --check --name --help FILE: exit %d or help printed (--help is the name)" % rc)
        rc, out, err = run(["submit", "--check", "--name=x", "--", "-h"])
        if rc != 2 or "usage:" in out or "cannot open -h" not in err:
            problem("sluice submit --check -- -h: exit %d (expected 2: no file -h), or help printed" % rc)
    finally:
        os.unlink(f.name)


def main():
    if not os.access(SLUICE, os.X_OK):
        print("cli_help: no sluice binary at %s (set SLUICE_BIN)" % SLUICE, file=sys.stderr)
        return 1
    helps = check_help_pages()
    parsed = check_parsers(helps)
    seen = check_readme(helps)
    check_general()
    check_not_help()
    if problems:
        print("cli_help: %d problems:\n  %s" % (len(problems), "\n  ".join(problems)), file=sys.stderr)
        return 1
    print("cli_help: %d commands answer --help and -h; %d options of their parsers and %d README mentions "
          "are in their help" % (len(helps), sum(len(o) for o in parsed.values()), seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
