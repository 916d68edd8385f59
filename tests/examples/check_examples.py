"""Compile every code example of the public headers and the README.

Usage (meson runs it, with Debian's /usr/bin/python3; standard library only):
    check_examples.py --include DIR [--mpi-cflags FLAGS] [--self-test FIXTURES]
                      FILE_OR_FOLDER... -- CC [CC ARGS...]
A folder stands for its *.h and *.md files.

Every C example is marked with its kind, and an unmarked one is an error:

  headers (*.h), inside a /* ** */ comment: a line "** Example (KIND):" followed by
      the code, each line indented by four spaces more than the prose ("**     code");
      the example ends at the first line that is not so indented (a bare "**" inside
      it is a blank line). Any other block indented that deep right after prose or a
      blank comment line is taken for an unmarked example.
  Markdown (*.md): a ```c fenced block whose nearest non-blank line before it is
      "<!-- KIND -->". Only ```c blocks are C; a marker before anything else is an
      error, so markers cannot go stale.

KIND is one of
  program       a whole translation unit, compiled as it stands (headers on the path)
  fragment      statements, compiled as the body of `ad_status adtape_example(void)`
                (so `return ad_fail(...)` works) after tests/examples/prelude.h, which
                declares the names examples assume (t, tape, ps, gs, W, x, ...)
  declarations  file-scope code (types, rules, functions), compiled after the prelude
or, in headers, which have no fence to name a language, one of OTHER (python, sh,
text): code that is not C, shown and not compiled.

Within one file, fragments and declarations are compiled after every declarations
example that precedes them, so a narrative (the README's tour) can define a rule in
one block and use it in the next. Programs compile with -Wall -Wextra -Wpedantic
-Werror; the others too, except that unused variables and functions are allowed.
Examples from a header that includes <mpi.h> need --mpi-cflags (skipped without).
Errors point at the example's own lines (#line). Exits 1 if anything failed.

--self-test FIXTURES checks the checker: each pass_* file there must pass, and each
fail_* file must fail with the text its first line gives after "expect:".
"""
import os
import re
import subprocess
import sys
import tempfile

KINDS = ("program", "fragment", "declarations")
OTHER = ("python", "sh", "text")  # header examples that are not C
HEADER_MARKER = re.compile(r"^\*\* Example \((\w+)\):\s*$")
MD_MARKER = re.compile(r"^<!--\s*(\w+)\s*-->\s*$")
FENCE = re.compile(r"^```\s*(\S*)")
CODE_INDENT = "**     "  # "**", the prose's one space, and four more
STRICT = ["-std=c11", "-Wall", "-Wextra", "-Wpedantic", "-Werror"]
LENIENT = ["-Wno-unused-variable", "-Wno-unused-const-variable",
           "-Wno-unused-function", "-Wno-unused-but-set-variable"]
PRELUDE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prelude.h")


class Example:
    def __init__(self, path, line, kind, code):
        self.path, self.line, self.kind, self.code = path, line, kind, code
        self.mpi = False  # from a header that includes <mpi.h>

    def where(self):
        return "%s:%d (%s)" % (self.path, self.line, self.kind)


def indent_after_stars(text):
    """Spaces after a comment line's leading "**", or None for other lines."""
    if not text.startswith("**"):
        return None
    rest = text[2:]
    if not rest.strip():
        return 0
    return len(rest) - len(rest.lstrip(" "))


def header_examples(path, lines, errors):
    examples, i = [], 0
    while i < len(lines):
        m = HEADER_MARKER.match(lines[i])
        if m:
            kind, start, code = m.group(1), i + 2, []
            i += 1
            while i < len(lines) and (lines[i].startswith(CODE_INDENT)
                                      or lines[i].rstrip() == "**"):
                code.append(lines[i][len(CODE_INDENT):].rstrip())
                i += 1
            while code and not code[-1]:
                code.pop()
            if kind not in KINDS + OTHER:
                errors.append("%s:%d: unknown example kind '%s' (%s)"
                              % (path, start - 1, kind, ", ".join(KINDS + OTHER)))
            elif not code:
                errors.append("%s:%d: an Example marker with no indented code after it"
                              % (path, start - 1))
            elif kind in KINDS:
                examples.append(Example(path, start, kind, code))
            continue
        ind, prev = indent_after_stars(lines[i]), lines[i - 1] if i else ""
        prev_ind = indent_after_stars(prev)
        after_prose = prev.lstrip().startswith("/*") or (prev_ind is not None
                                                         and prev_ind <= 2)
        if ind is not None and ind >= 5 and after_prose:
            errors.append("%s:%d: an indented block (a code example?) with no "
                          "'** Example (KIND):' line before it" % (path, i + 1))
            while i < len(lines) and (indent_after_stars(lines[i]) or 0) >= 5:
                i += 1
            continue
        i += 1
    return examples


def markdown_examples(path, lines, errors):
    examples, i, last = [], 0, None  # last: (line number, kind) of the last marker
    while i < len(lines):
        text = lines[i].rstrip()
        m = MD_MARKER.match(text)
        if m and m.group(1) in KINDS:
            if last:
                errors.append("%s:%d: marker '%s' not followed by a ```c block"
                              % (path, last[0], last[1]))
            last = (i + 1, m.group(1))
            i += 1
            continue
        f = FENCE.match(text)
        if f:
            lang, start, code = f.group(1).lower(), i + 2, []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                code.append(lines[i].rstrip())
                i += 1
            i += 1
            if lang == "c":
                if last:
                    examples.append(Example(path, start, last[1], code))
                else:
                    errors.append("%s:%d: a ```c block with no <!-- program -->, "
                                  "<!-- fragment --> or <!-- declarations --> before it"
                                  % (path, start - 1))
            elif last:
                errors.append("%s:%d: marker '%s' before a ```%s block, not ```c"
                              % (path, last[0], last[1], lang))
            last = None
            continue
        if text and last:
            errors.append("%s:%d: marker '%s' not followed by a ```c block"
                          % (path, last[0], last[1]))
            last = None
        i += 1
    if last:
        errors.append("%s:%d: marker '%s' at the end of the file" % (path, last[0], last[1]))
    return examples


def source_for(example, earlier):
    """The translation unit: the example, after the prelude and the file's earlier
    declarations unless it is a program."""
    def block(ex):
        return ['#line %d "%s"' % (ex.line, ex.path)] + ex.code
    if example.kind == "program":
        return "\n".join(block(example)) + "\n"
    out = ['#include "%s"' % PRELUDE]
    for ex in earlier:
        out += block(ex)
    if example.kind == "declarations":
        out += block(example)
    else:
        out += ["ad_status adtape_example(void);", "ad_status adtape_example(void)", "{"]
        out += block(example)
        out += ["return AD_OK;", "}"]
    return "\n".join(out) + "\n"


def compile_example(example, earlier, args, tmp):
    src = os.path.join(tmp, "example.c")
    with open(src, "w") as f:
        f.write(source_for(example, earlier))
    flags = STRICT + ([] if example.kind == "program" else LENIENT)
    if example.mpi:
        flags = flags + ["-DADTAPE_EXAMPLES_MPI"] + args.mpi_cflags.split()
    cmd = args.cc + flags + ["-I", args.include, "-c", src, "-o",
                             os.path.join(tmp, "example.o")]
    run = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return run.returncode == 0, run.stdout


def check_files(paths, args):
    """Returns (number of failures, report lines)."""
    errors, report, checked, skipped = [], [], 0, 0
    with tempfile.TemporaryDirectory(prefix="adtape-examples-") as tmp:
        for path in paths:
            with open(path, encoding="utf-8") as f:
                lines = f.read().split("\n")
            shown = os.path.relpath(path)
            md = path.endswith(".md")
            found = (markdown_examples if md else header_examples)(shown, lines, errors)
            mpi = not md and any(re.match(r"\s*#\s*include\s*<mpi\.h>", x) for x in lines)
            earlier = []
            for ex in found:
                ex.mpi = mpi
                if mpi and not args.mpi_cflags:
                    skipped += 1
                    report.append("skipped (no MPI): %s" % ex.where())
                    continue
                ok, out = compile_example(ex, earlier, args, tmp)
                checked += 1
                if not ok:
                    errors.append("%s does not compile:\n%s" % (ex.where(), out.rstrip()))
                if ex.kind == "declarations":
                    earlier.append(ex)
    report += errors
    report.append("examples: %d compiled, %d failed, %d skipped"
                  % (checked, len(errors), skipped))
    return len(errors), report


def self_test(folder, args):
    failed = 0
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        n, report = check_files([path], args)
        text = "\n".join(report)
        if name.startswith("pass_"):
            ok, want = n == 0, "pass"
        else:
            with open(path, encoding="utf-8") as f:
                want = f.readline().split("expect:", 1)[-1].strip()
            want = re.sub(r"\s*(\*/|-->)$", "", want)
            ok = n > 0 and want in text
        print("self-test: %s: %s" % (name, "as expected" if ok else
                                     "WRONG, expected %s:\n%s" % (want, text)))
        failed += not ok
    return failed


def parse(argv):
    class Args:
        include, mpi_cflags, self_test, files, cc = None, "", None, [], []
    a, i = Args(), 0
    while i < len(argv):
        if argv[i] == "--":
            a.cc = argv[i + 1:]
            break
        if argv[i] in ("--include", "--mpi-cflags", "--self-test"):
            setattr(a, argv[i][2:].replace("-", "_"), argv[i + 1])
            i += 2
            continue
        a.files.append(argv[i])
        i += 1
    if not a.include or not a.cc or not (a.files or a.self_test):
        sys.exit(__doc__)
    return a


def main():
    args = parse(sys.argv[1:])
    if args.self_test:
        return 1 if self_test(args.self_test, args) else 0
    paths = []
    for p in args.files:
        if os.path.isdir(p):
            paths += sorted(os.path.join(p, n) for n in os.listdir(p)
                            if n.endswith((".h", ".md")))
        else:
            paths.append(p)
    n, report = check_files(paths, args)
    print("\n".join(report))
    return 1 if n else 0


if __name__ == "__main__":
    sys.exit(main())
