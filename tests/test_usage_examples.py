"""The usage-reporting examples a provider copies work with the SDK the project pins: the README's
CloudEvents snippet and the agent in docs/provider_agent.py make events the API accepts."""

import importlib.metadata
import importlib.util
import re
import warnings
from types import ModuleType
from typing import Any

import pytest
from django.utils import timezone

from tests.billing.conftest import running_lease
from tests.conftest import REPO


def readme_cloudevents_snippet() -> str:
    """The README's indented code block that uses the CloudEvents SDK."""
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"(?:^(?: {4}.*)?\n)+", readme, re.M)
    snippets = ["\n".join(line[4:] for line in block.splitlines()) for block in blocks if "cloudevents" in block]
    assert len(snippets) == 1, "the README should show one CloudEvents example"
    return snippets[0]


def test_the_examples_use_the_cloudevents_sdk_the_project_pins() -> None:
    pinned = re.search(r"^cloudevents==(\S+)$", (REPO / "requirements.txt").read_text(), re.M)

    assert pinned is not None
    assert importlib.metadata.version("cloudevents") == pinned[1]


def test_the_readmes_cloudevents_snippet_imports_what_the_sdk_has() -> None:
    imports = [line for line in readme_cloudevents_snippet().splitlines() if re.match(r"(from|import) ", line)]

    assert any("cloudevents" in line for line in imports)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # nor what the SDK deprecated
        exec("\n".join(imports), {})  # noqa: S102 - the README's own lines


@pytest.mark.django_db
def test_the_readmes_cloudevents_snippet_makes_an_event_the_api_accepts_once(buyer, provider, make_client) -> None:
    lease = running_lease(buyer=buyer, provider=provider)
    scope: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        exec(readme_cloudevents_snippet().replace("<lease id>", str(lease.pk)), scope)  # noqa: S102
    client = make_client(provider)

    def send() -> dict[str, Any]:
        answer = client.post("/api/v1/usage-events/", data=scope["body"], content_type=scope["headers"]["content-type"])
        assert answer.status_code == 200, answer.content
        return dict(answer.json())

    assert (send()["accepted"], send()["duplicates"]) == (1, 1)


def provider_agent() -> ModuleType:
    spec = importlib.util.spec_from_file_location("provider_agent", REPO / "docs" / "provider_agent.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_links_the_provider_agent() -> None:
    assert "(docs/provider_agent.py)" in (REPO / "README.md").read_text()


@pytest.mark.django_db(transaction=True)
def test_the_provider_agent_posts_a_batch_the_api_accepts(buyer, provider, make_client, live_server) -> None:
    agent = provider_agent()
    lease = running_lease(buyer=buyer, provider=provider)
    key = make_client(provider)._credentials["HTTP_AUTHORIZATION"].removeprefix("Bearer ")
    minute = timezone.now().replace(second=0, microsecond=0)
    event = agent.usage_event(source="agent://test", lease=str(lease.pk), cards=8, minute=minute, card_seconds=480.0)

    answer = agent.post_batch(live_server.url, key, [event])

    assert (answer["accepted"], answer["rejected"], answer["errors"]) == (1, 0, [])
