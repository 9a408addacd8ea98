"""What a chatbot imports to read its rule files — now the standalone `autotrain_client` package
(`pip install ./client`, standard library only), re-exported here for existing users:

    from autotrain.client import RuleBook        # the same as: from autotrain_client import RuleBook
    book = RuleBook("/srv/chatbot/config")
    rules = book.rules_for("fashion_rules.json", user_id)   # list of "- ..." lines, in file order

`RuleBook.from_url(...)` reads Auto-Train over HTTP instead of a folder; `render(...)` gives the whole file
for one user. See client/autotrain_client/ for the semantics (canary entries, `replaces`, change detection,
the last good version of a file that stops parsing).
"""

from __future__ import annotations

from autotrain_client import (
    FULL_ROLLOUT,
    RuleBook,
    RuleFileInvalid,
    applicable_rules,
    bucket,
    in_rollout,
    render_content,
)

__all__ = ["FULL_ROLLOUT", "RuleBook", "RuleFileInvalid", "applicable_rules", "bucket", "in_rollout", "render_content"]
