"""The campaign's ``data_query``: one complete butler expression, so no restriction can be escaped.

Every step query a site runs is ``(data_query) AND visit IN (...)`` (or ``tract IN``),
built by :func:`multisite_drp.campaign.plan.id_query` and handed to ``pipetask qgraph
--data-query`` and to BPS's ``dataQuery`` (both take one string; neither takes bind
values on the command line). Parenthesising is safe only for an expression that parses
on its own: ``instrument = 'X') OR (visit > 0`` would turn ``(q) AND visit IN (...)``
into ``(instrument = 'X') OR (visit > 0) AND visit IN (...)``, every visit at every site.

Two checks, both raising :class:`QueryError`:

* :func:`check_balanced`: string literals closed and parentheses balanced, never
  closing one that is not open. No imports; it runs on every load (the DAG's parse and
  every task) and already refuses every breakout.
* :func:`parse_query`: the butler's own parser (``lsst.daf.butler.queries.expressions.
  parser.parse_expression``, the one ``Butler.query`` uses). It runs when a campaign is
  fully validated (``load_campaign(check_pipeline=True)``, the DAG's ``validate_campaign``)
  and before every query is built (:func:`multisite_drp.campaign.plan.id_query`). It
  imports ``lsst.daf.butler`` (about 2 s), so never at DAG parse time.
"""

from __future__ import annotations

import functools

from multisite_drp.errors import InputError

__all__ = ["QueryError", "check_balanced", "parse_query"]


class QueryError(InputError, ValueError):
    """A data query is not one complete butler expression; the message says why."""


def check_balanced(query: str) -> str:
    """``query`` if its quotes are closed and its parentheses balanced; :class:`QueryError` otherwise.

    The butler lexer's string literals are ``'...'`` and ``T'...'`` with no escapes, so a
    quote always opens or closes one; parentheses inside literals do not count.
    """
    depth = 0
    in_string = False
    for i, c in enumerate(query):
        if c == "'":
            in_string = not in_string
        elif in_string:
            continue
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise QueryError(f"')' at position {i + 1} closes a parenthesis that is not open; expected one "
                                 "complete expression with balanced parentheses")
    if in_string:
        raise QueryError("a string literal is not closed (missing \"'\"); expected one complete expression")
    if depth:
        raise QueryError(f"{depth} parenthesis(es) left open; expected one complete expression with balanced "
                         "parentheses")
    return query


_BOOLEAN_OPS = {"AND", "OR", "=", "!=", "<", "<=", ">", ">=", "OVERLAPS"}


@functools.lru_cache(maxsize=64)
def parse_query(query: str) -> str:
    """``query`` if the butler's parser reads it as one boolean expression; :class:`QueryError` otherwise.

    Refused besides syntax errors: bind names (``:name``; the campaign passes no bind
    values) and a bare value or identifier where a condition is expected.
    """
    check_balanced(query)
    # Lazy: this imports the whole butler. BindName is not in the parser package's __all__.
    from lsst.daf.butler.queries.expressions.parser import ParserYaccError, parse_expression
    from lsst.daf.butler.queries.expressions.parser.exprTree import (
        BinaryOp,
        BindName,
        IsIn,
        Node,
        Parens,
        UnaryOp,
    )

    try:
        tree = parse_expression(query)
    except ParserYaccError as exc:
        raise QueryError(f"the butler's parser rejects it: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the parser's own checks (e.g. a bad range literal)
        raise QueryError(f"the butler's parser rejects it: {type(exc).__name__}: {exc}") from None
    if tree is None:
        return query
    stack: list[Node] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, BindName):
            raise QueryError(f"bind name :{node.name} is not allowed (the campaign passes no bind values); "
                             "expected literal values")
        stack.extend(c for c in node.children if isinstance(c, Node))
    root = tree
    while isinstance(root, Parens):
        root = root.expr
    boolean = (isinstance(root, BinaryOp) and root.op.upper() in _BOOLEAN_OPS) or isinstance(root, IsIn) or (
        isinstance(root, UnaryOp) and root.op.upper() == "NOT")
    if not boolean and type(root).__name__ not in ("GlobNode", "FunctionCall"):
        raise QueryError(f"{query!r} is an expression of type {type(root).__name__}, not a condition; expected a "
                         "boolean expression such as \"instrument = 'LSSTCam' AND band IN ('g', 'r')\"")
    return query
