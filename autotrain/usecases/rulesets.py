"""Rule sets over HTTP: what a chatbot that runs elsewhere reads instead of Auto-Train's rules folder.

A rule set is one allowed rule file as it is now: its content, its version (the content's hash, the same
`version` a deployment records and the reload call carries) and an ETag made of it, and its rule lines with
who gets each. With a user id, only the rules that apply to that user (canary buckets applied here, with the
one implementation the client uses too), for chatbots that cannot run the Python client."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from autotrain.errors import InvalidInput, NotFound, RuleFileInvalid
from autotrain.policy import Action, Actor, require_permission
from autotrain.rulefiles import RuleFiles, content_version
from autotrain.usecases.file_truth import RuleFileTruth, folder_current

FORMATS = {".json": "json", ".md": "markdown"}


class RuleSetInfo(BaseModel):
    module_name: str
    version: str
    etag: str
    updated_at: datetime | None  # when the file last changed (None: not created yet)


class RuleSetRule(BaseModel):
    rule: str
    rule_id: str | None = None
    rollout_percent: int | None = None  # a canary's share of users (None: everyone)
    replaces: str | None = None  # the line a canary replaces for the users it reaches


class RuleSet(BaseModel):
    module_name: str
    version: str
    etag: str
    format: str  # json | text | markdown
    content: str  # the whole file, as the chatbot's folder would hold it
    rules: list[RuleSetRule]
    user_id: str | None = None  # when given: `rules` are only those that apply to this user


def etag_of(version: str) -> str:
    return f'"{version}"'


class RuleSets:
    def __init__(self, *, rule_files: RuleFiles, truth: RuleFileTruth | None = None) -> None:
        self.rule_files = rule_files
        # the content served: the rules folder's, or (several instances) the newest stored version, so that every
        # instance answers the same ETag
        self.truth = truth

    async def list(self, actor: Actor) -> list[RuleSetInfo]:
        require_permission(actor, Action.READ)
        return [await self._info(module_name) for module_name in self.rule_files.allowed_modules]

    async def etag(self, module_name: str, actor: Actor) -> str:
        """The current ETag alone (a conditional GET answers 304 without building the body)."""
        require_permission(actor, Action.READ)
        return (await self._info(self._allowed(module_name))).etag

    async def get(self, module_name: str, actor: Actor, *, user_id: str | None = None) -> RuleSet:
        require_permission(actor, Action.READ)
        module_name = self._allowed(module_name)
        content, _ = await self._current(module_name)
        version = content_version(content)
        from autotrain_client import RuleFileInvalid as ContentInvalid
        from autotrain_client import applicable_rules  # the client's: one implementation of who gets a rule

        try:
            rules = applicable_rules(module_name, content, user_id)
        except ContentInvalid as exc:
            raise RuleFileInvalid(f"{module_name} does not parse: {exc}") from exc
        return RuleSet(
            module_name=module_name,
            version=version,
            etag=etag_of(version),
            format=next((f for suffix, f in FORMATS.items() if module_name.endswith(suffix)), "text"),
            content=content.decode("utf-8", errors="replace").removeprefix("\ufeff"),
            rules=[RuleSetRule(**rule) for rule in rules],
            user_id=user_id,
        )

    def _allowed(self, module_name: str) -> str:
        try:
            self.rule_files.path_for(module_name)
        except InvalidInput as exc:
            raise NotFound(f"no rule set {module_name!r}: {exc.message}") from exc
        return module_name

    async def _info(self, module_name: str) -> RuleSetInfo:
        content, changed = await self._current(module_name)
        version = content_version(content)
        return RuleSetInfo(module_name=module_name, version=version, etag=etag_of(version), updated_at=changed)

    async def _current(self, module_name: str) -> tuple[bytes, datetime | None]:
        if self.truth is None:
            return await folder_current(self.rule_files, module_name)
        return await self.truth.current(module_name)
