"""Auto-Train's client for chatbots: which rule lines apply to which user, from a folder or over HTTP.

    from autotrain_client import RuleBook

    book = RuleBook.from_url("https://autotrain.internal", token, cache_dir="/var/cache/chatbot-rules")
    prompt = book.render("prompt_v2.txt", user_id)        # the file, with the rule lines for this user
    rules = book.rules_for("fashion_rules.json", user_id)  # just the "- ..." lines

    book = RuleBook("/srv/chatbot/config")                  # or: a folder Auto-Train deploys to

Standard library only. Buckets are stable across processes and machines (SHA-256 of rule id and user id), and
the Auto-Train server uses this very code for its `?user_id=` view, so both always agree on who gets a canary.
"""

from autotrain_client.rollout import FULL_ROLLOUT, bucket, in_rollout
from autotrain_client.rulebook import RuleBook
from autotrain_client.rules import RuleFileInvalid, applicable_rules, content_version, render_content

__all__ = [
    "FULL_ROLLOUT",
    "RuleBook",
    "RuleFileInvalid",
    "applicable_rules",
    "bucket",
    "content_version",
    "in_rollout",
    "render_content",
]
__version__ = "0.1.0"
