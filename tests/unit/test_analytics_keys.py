"""The analytics keys, their aliases and the request merge rules (reference §4.3, §6.4, §8.6)."""

from __future__ import annotations

import pytest

from mesaya_realtime.domain.analytics import ANALYTICS, REFRESHED_BY, AnalyticsQuery, Reader, key_of
from mesaya_realtime.domain.catalogue import CATALOGUE


@pytest.mark.parametrize(
    ("scope", "entity", "key"),
    [
        ("public", "users", "analytics-public-users"),
        ("pub", "Public_User", "analytics-public-users"),
        ("PUBLIC", "dish", "analytics-public-dishes"),
        ("public", "menu", "analytics-public-menus"),
        ("restaurant", "restaurant", "analytics-restaurant-users"),
        ("owner", "restaurant-user", "analytics-restaurant-users"),
        ("rest", "users", "analytics-restaurant-users"),
        ("auth", "auth-users", "analytics-admin-users"),
        ("administrator", "restaurant", "analytics-admin-restaurants"),
        ("adm", "section", "analytics-admin-sections"),
        ("admin", "subscriptionplans", "analytics-admin-subscription-plans"),
        ("admin", "subscription_plan", "analytics-admin-subscription-plans"),
        ("admin", "review", "analytics-admin-reviews"),
        ("admin", "payments", "analytics-admin-payments"),
    ],
)
def test_scope_and_entity_aliases(scope: str, entity: str, key: str) -> None:
    found = key_of(scope, entity)
    assert found is not None
    assert found.name == key


@pytest.mark.parametrize(
    ("scope", "entity"), [("public", "payments"), ("restaurant", "tables"), ("x", "users")]
)
def test_unknown_keys(scope: str, entity: str) -> None:
    assert key_of(scope, entity) is None


def test_fifteen_keys_and_who_reads_them() -> None:
    assert len(ANALYTICS) == 15
    readers = {name: key.reader for name, key in ANALYTICS.items()}
    assert readers["analytics-public-users"] is Reader.ANYONE
    assert readers["analytics-restaurant-users"] is Reader.ADMIN_OR_OWNER
    assert {r for n, r in readers.items() if n.startswith("analytics-admin-")} == {Reader.ADMIN}
    assert [k.name for k in ANALYTICS.values() if k.identifier_param] == ["analytics-restaurant-users"]
    assert ANALYTICS["analytics-admin-reviews"].path == "/api/v1/reviews/analytics/stats"


def test_every_refreshing_entity_and_key_exists() -> None:
    for entity, keys in REFRESHED_BY.items():
        assert entity in CATALOGUE.by_name, entity
        assert set(keys) <= set(ANALYTICS), keys
    assert "analytics-admin-users" in REFRESHED_BY["users"]  # the row Go never reached


def test_the_merge_rules() -> None:
    key = ANALYTICS["analytics-restaurant-users"]
    seeded = AnalyticsQuery.seed(key, {"restaurantId": " r-1 ", "startDate": "2026-01-01", "x": "y"})
    assert seeded == AnalyticsQuery("r-1", (("startDate", "2026-01-01"),))
    assert seeded.params(key) == (("restaurantId", "r-1"), ("startDate", "2026-01-01"))
    assert seeded.metadata(key) == {
        "scope": "restaurant",
        "identifier": "r-1",
        "query.startDate": "2026-01-01",
    }
    # a non-empty identifier replaces; an empty one does not; an empty value deletes
    assert seeded.merged(key, {"identifier": "r-2"}).identifier == "r-2"
    assert seeded.merged(key, {"identifier": " "}).identifier == "r-1"
    assert seeded.merged(key, {"query": {"startDate": ""}}).query == ()
    assert seeded.merged(key, {"query": {"startDate": None, "other": "1"}}).query == ()
    assert seeded.merged(key, {"query": {"startDate": 2026}}).query == (("startDate", "2026"),)
    assert seeded.merged(key, None) == seeded
    for bad in ([], "x", {"query": []}, {"query": {"startDate": {"a": 1}}}, {"identifier": True}):
        with pytest.raises(ValueError, match=r"\w"):
            seeded.merged(key, bad)
