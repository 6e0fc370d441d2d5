"""The code in README.md runs and prints what the README says it prints.

Conventions of README.md's fenced blocks:
* ```python blocks run in the order they appear, in one shared namespace: a block may use the
  names the blocks above it defined (`model`, `tokens`, ...).
* ```python skip blocks are shown, not run (they need files or hardware a test run lacks).
  Any other fence (```bash, ```text, ...) is not run either.
* Every block that runs is followed (blank lines between at most) by a ```text block: the
  block's standard output, compared exactly.

A block that raises fails its test; the blocks after it then fail too, naming it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
RUN, SKIP = "python", "python skip"
_FENCE = re.compile(r"^```(.*)$")


@dataclasses.dataclass(frozen=True)
class Block:
    info: str  # the fence's info string: "python", "python skip", "bash", "text", ...
    line: int  # 1-based line of the first line of code (after the opening fence)
    code: str
    expected: str | None = None  # the ```text block right after it


def parse_blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text (fences at the start of a line), in order; a block
    that runs gets the ```text block right after it (blank lines between at most) as its
    expected output."""
    lines = text.splitlines()
    found = []  # (info, opening fence index, closing fence index)
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and lines[end] != "```":
            end += 1
        if end == len(lines):
            raise ValueError(f"README.md: the block opened at line {i + 1} is never closed.")
        found.append((match.group(1).strip(), i, end))
        i = end + 1
    blocks = []
    for k, (info, open_, close) in enumerate(found):
        expected = None
        if info == RUN and k + 1 < len(found) and found[k + 1][0] == "text":
            _, next_open, next_close = found[k + 1]
            if all(not line.strip() for line in lines[close + 1:next_open]):
                expected = "".join(line + "\n" for line in lines[next_open + 1:next_close])
        code = "".join(line + "\n" for line in lines[open_ + 1:close])
        blocks.append(Block(info, open_ + 2, code, expected))
    return blocks


BLOCKS = parse_blocks(README.read_text())
RUN_BLOCKS = [b for b in BLOCKS if b.info == RUN]


class Runner:
    """Runs python blocks in order, once each, in one namespace."""

    def __init__(self, blocks: list[Block], path: Path):
        self.blocks, self.path = blocks, path
        self.namespace: dict = {"__name__": "__readme__"}
        self.outputs: list[str] = []
        self.failed: Block | None = None

    def output_of(self, index: int) -> str:
        """The standard output of block `index`, running it (and those before it) if needed."""
        while len(self.outputs) <= index:
            if self.failed is not None:
                pytest.fail(f"the python block at {self.path.name} line {self.failed.line} "
                            f"failed, and the blocks after it build on it.")
            block = self.blocks[len(self.outputs)]
            # Blank lines in front so that tracebacks give the file's line numbers.
            code = compile("\n" * (block.line - 1) + block.code, str(self.path), "exec")
            stdout = io.StringIO()
            try:
                with contextlib.redirect_stdout(stdout):
                    exec(code, self.namespace)
            except BaseException:
                self.failed = block
                raise
            self.outputs.append(stdout.getvalue())
        return self.outputs[index]


_RUNNER = Runner(RUN_BLOCKS, README)


def test_blocks_are_marked_known_ways():
    assert RUN_BLOCKS, "README.md has no python block"
    for block in BLOCKS:
        if block.info.startswith("python"):
            assert block.info in (RUN, SKIP), (
                f"README.md line {block.line}: unknown marker ```{block.info}; use ```{RUN} "
                f"or ```{SKIP}.")
    for block in RUN_BLOCKS:
        assert block.expected is not None, (
            f"README.md line {block.line}: a python block that runs needs its output in a "
            f"```text block right after it.")


@pytest.mark.parametrize("index", range(len(RUN_BLOCKS)),
                         ids=[f"line{b.line}" for b in RUN_BLOCKS])
def test_python_block_runs_and_prints_its_output(index):
    block = RUN_BLOCKS[index]
    output = _RUNNER.output_of(index)
    if block.expected is not None:
        assert output == block.expected, (
            f"README.md line {block.line}: the block printed\n{output}\nbut the README shows\n"
            f"{block.expected}")


def test_parser_pairs_outputs_and_skips():
    text = "\n".join([
        "x", "```python", "print(1)", "```", "", "```text", "1", "```",
        "```python skip", "boom()", "```", "```text", "not compared", "```",
        "```python", "a = 2", "```", "prose", "```text", "not its output", "```",
        "```bash", "ls", "```",
    ])
    blocks = parse_blocks(text)
    assert [b.info for b in blocks] == ["python", "text", "python skip", "text", "python", "text",
                                        "bash"]
    assert blocks[0].line == 3 and blocks[0].code == "print(1)\n"
    assert blocks[0].expected == "1\n"
    assert blocks[2].expected is None  # not run
    assert blocks[4].expected is None  # prose between the block and the text block


def test_a_raising_block_fails_and_so_do_the_blocks_after_it(tmp_path):
    text = "```python\nx = 1\n```\n```python\nraise RuntimeError('boom')\n```\n" \
           "```python\nprint(x)\n```\n"
    runner = Runner(parse_blocks(text), tmp_path / "README.md")
    assert runner.output_of(0) == ""
    with pytest.raises(RuntimeError, match="boom") as info:
        runner.output_of(1)
    assert info.traceback[-1].lineno + 1 == 5  # the README's line (1-based) of the raise
    with pytest.raises(pytest.fail.Exception, match="block at README.md line 5 failed"):
        runner.output_of(2)
