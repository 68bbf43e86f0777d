"""Per-character features of a text, for finding the cells that track them.

:func:`text_features` reads a text once, left to right, with a small lexer for C and
for prose, and gives for every character t the state after reading it: the position
in the line, whether it is inside double quotes, a C comment or the braces of an
``if`` block, and the nesting depth of brackets. :data:`FEATURES` names them in the
order the ranking reports them.
"""

from __future__ import annotations

import numpy as np

FEATURES = ("in_quotes", "line_position", "bracket_depth", "in_comment", "in_if_block")


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def text_features(text: str) -> dict[str, np.ndarray]:
    """Per-character features of `text`, each a float32 array (T,).

    Every feature describes the state *after reading* character t, as the model's
    activation at t does:

    * ``line_position``: characters since the last newline (0 at the newline itself).
    * ``in_quotes``: 1 inside a double-quoted span, the opening quote included and the
      closing one not. Double quotes only: in prose a single quote is mostly an
      apostrophe ("'tis", "o'er"). A backslash escapes the next character inside a
      string (C's ``"\\""``), and C character literals (``'x'``, ``'\\n'``, ``'"'``)
      are skipped whole. A blank line ends an open quote (at the blank line's newline):
      one stray quote -- a ditto mark, a quotation that runs on into the next paragraph
      -- must not put the rest of a book inside quotes; C strings never span lines.
    * ``bracket_depth``: the nesting depth of ``( [ {`` (closers lower it, never below
      0), outside strings and comments.
    * ``in_comment``: 1 inside a C comment, from the second character of ``/*`` or
      ``//`` up to the ``*`` of ``*/`` (the closing ``/`` is 0) or to the newline
      that ends a ``//`` comment (0).
    * ``in_if_block``: 1 inside the braces of an ``if (...) { ... }`` block of C (also
      ``else if``), nested blocks included: from the opening ``{`` to just before its
      matching ``}``. A heuristic: the keyword ``if``, a parenthesised condition
      balanced to its ``)``, then only whitespace before ``{``. An ``if`` without
      braces or an ``else { ... }`` opens no block; a comment between ``)`` and ``{``
      hides the block; preprocessor lines are read as code.
    """
    T = len(text)
    out = {name: np.zeros(T, dtype=np.float32) for name in FEATURES}
    in_string = escaped = in_line_comment = in_block_comment = False
    comment_start = -1  # index of the '*' that opened the block comment
    last_code_slash = -2  # index of the last '/' read as code
    skip = 0  # characters left of a C character literal
    line_position = depth = 0
    braces: list[bool] = []  # per open '{': does it open an if block?
    if_blocks = 0  # how many of them do
    if_state = None  # None | "paren" (after `if`) | "cond" (inside its ()) | "brace" (after)
    cond_depth = 0
    blank_line = True  # no visible character yet on the current line
    for t, ch in enumerate(text):
        line_position = 0 if ch == "\n" else line_position + 1
        ends_blank_line = ch == "\n" and blank_line
        blank_line = ch == "\n" or (blank_line and ch.isspace())
        if in_line_comment:
            in_line_comment = ch != "\n"
        elif in_block_comment:
            if ch == "/" and text[t - 1] == "*" and t - 1 > comment_start:
                in_block_comment = False
        elif in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"' or ends_blank_line:
                in_string = False
        elif skip:
            skip -= 1
        else:  # code (or prose)
            if ch == '"':
                in_string = True
            elif ch == "'" and t + 2 < T and text[t + 2] == "'" and text[t + 1] != "\\":
                skip = 2  # 'x'
            elif ch == "'" and t + 3 < T and text[t + 1] == "\\" and text[t + 3] == "'":
                skip = 3  # '\n'
            elif ch == "/" and last_code_slash == t - 1:
                in_line_comment = True
            elif ch == "*" and last_code_slash == t - 1:
                in_block_comment, comment_start = True, t
            if ch == "/":
                last_code_slash = t
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth = max(0, depth - 1)
            # the if-block heuristic
            if ch == "{":
                opens_if = if_state == "brace"
                braces.append(opens_if)
                if_blocks += opens_if
                if_state = None
            elif ch == "}":
                if braces:
                    if_blocks -= braces.pop()
                if_state = None
            elif (
                ch == "f"
                and t >= 1
                and text[t - 1] == "i"
                and (t < 2 or not _is_word_char(text[t - 2]))
                and (t + 1 >= T or not _is_word_char(text[t + 1]))
            ):
                if_state = "paren"
            elif if_state == "paren":
                if ch == "(":
                    if_state, cond_depth = "cond", 1
                elif not ch.isspace():
                    if_state = None
            elif if_state == "cond":
                cond_depth += (ch == "(") - (ch == ")")
                if cond_depth == 0:
                    if_state = "brace"
            elif if_state == "brace" and not ch.isspace():
                if_state = None
        out["line_position"][t] = line_position
        out["in_quotes"][t] = in_string
        out["bracket_depth"][t] = depth
        out["in_comment"][t] = in_line_comment or in_block_comment
        out["in_if_block"][t] = if_blocks > 0
    return out
