from dgls.engine.infill_prompt import HOLE, infill_messages, trim_context


def test_messages_hold_prefix_hole_suffix_in_order():
    msgs = infill_messages("def f(x):\n    return ", "\n\nprint(f(2))\n", "python", single_line=True)
    assert len(msgs) == 1 and msgs[0]["role"] == "user"
    body = msgs[0]["content"]
    assert body.endswith("def f(x):\n    return " + HOLE + "\n\nprint(f(2))\n")
    assert "python" in body and "single line" in body
    assert "single line" not in infill_messages("a", "b")[0]["content"]


def test_trim_keeps_nearest_whole_lines_on_both_sides():
    prefix = "".join(f"p{i}\n" for i in range(100)) + "x = "
    suffix = "\n" + "".join(f"s{i}\n" for i in range(100))
    p, s = trim_context(prefix, suffix, 120)
    assert len(p) + len(s) <= 120
    assert p.endswith("p99\nx = ") and prefix.endswith(p) and p.startswith("p")
    assert s.startswith("\ns0\n") and suffix.startswith(s) and s.endswith("\n")
    assert trim_context("ab", "cd", 10) == ("ab", "cd")
    p, s = trim_context("short ", "\n" + "y\n" * 500, 100)
    assert p == "short " and len(s) <= 94
