"""The snapshot planner: REST paths and query strings per entity and audience (reference §7.2-7.4).

The expected table below is written from the reference's endpoint catalogue (§7.3), not read
from the catalogue module, so a drift of either shows up here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from mesaya_realtime.domain.catalogue import CATALOGUE
from mesaya_realtime.domain.errors import SnapshotUnsupported
from mesaya_realtime.domain.queries import ListQuery
from mesaya_realtime.domain.snapshots import (
    SnapshotRequest,
    path_segment,
    plan_detail,
    plan_list,
    unwrap,
)

API = "/api/v1"
SECTION = "sec-1"


@dataclass(frozen=True)
class Expected:
    """One row of reference §7.3 (plus our deliberate differences, marked)."""

    resource: str
    aliases: dict[str, str]
    #: default variant: query key that carries the section (tables: our fix, see catalogue)
    section_key: str | None = None
    shared: bool = True
    #: owner variant; None = the owner uses the default variant
    owner_list: str | None = None
    owner_section_key: str | None = None
    owner_aliases: dict[str, str] | None = None


_RESTAURANT = {"restaurantid": "restaurantId"}
_PAYMENTS = {
    "status": "status",
    "type": "type",
    "reservationid": "reservationId",
    "restaurantid": "restaurantId",
    "startdate": "startDate",
    "enddate": "endDate",
    "minamount": "minAmount",
    "maxamount": "maxAmount",
}

EXPECTED: dict[str, Expected] = {
    "restaurants": Expected("restaurants", {}, owner_list=f"{API}/restaurants/me"),
    "tables": Expected(
        "tables",
        {**_RESTAURANT, "sectionid": "sectionId"},
        section_key="sectionId",
        owner_list=f"{API}/tables/section/{{section}}",
    ),
    "reservations": Expected(
        "reservations",
        {"status": "status", **_RESTAURANT, "date": "date"},
        shared=False,
        owner_list=f"{API}/reservations",
        owner_section_key="restaurantId",
        owner_aliases={"status": "status", **_RESTAURANT, "date": "date", "ownerid": ""},
    ),
    "reviews": Expected("reviews", {}),
    "sections": Expected(
        "sections", dict(_RESTAURANT), owner_list=f"{API}/sections", owner_section_key="restaurantId"
    ),
    "objects": Expected("objects", {}),
    "menus": Expected("menus", dict(_RESTAURANT)),
    "dishes": Expected("dishes", dict(_RESTAURANT)),
    "images": Expected("images", {"entityid": "entityId"}),
    "section-objects": Expected("section-objects", {}),
    "payments": Expected(
        "payments",
        dict(_PAYMENTS),
        shared=False,
        owner_list=f"{API}/payments",
        owner_section_key="restaurantId",
    ),
    "subscriptions": Expected(
        "subscriptions",
        {},
        shared=False,
        owner_list=f"{API}/subscriptions",
        owner_section_key="restaurantId",
    ),
    "subscription-plans": Expected("subscription-plans", {}),
    "users": Expected("users", {"status": "status", "role": "role", **_RESTAURANT, "active": "active"}),
    "owner-upgrades": Expected("owner-upgrades", {"status": "status", "userid": "userId"}),
}

AUDIENCES = ("admin", "owner", "user")


def test_the_expected_table_covers_every_catalogue_entity() -> None:
    assert set(EXPECTED) == {spec.name for spec in CATALOGUE.entities}


def _variant(name: str, audience: str) -> tuple[str, str | None, dict[str, str], bool]:
    """(list path, section key, aliases, shared) the reference prescribes for an audience."""
    row = EXPECTED[name]
    if audience == "owner" and row.owner_list is not None:
        aliases = row.owner_aliases if row.owner_aliases is not None else row.aliases
        return row.owner_list, row.owner_section_key, aliases, False
    return f"{API}/{row.resource}", row.section_key, row.aliases, row.shared


@pytest.mark.parametrize("audience", AUDIENCES)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_default_list_sends_page_and_limit_and_the_section_only_where_the_variant_says(
    name: str, audience: str
) -> None:
    path, section_key, _, shared = _variant(name, audience)
    request = plan_list(CATALOGUE.by_name[name], audience, SECTION, ListQuery())
    expected_params = [("page", "1"), ("limit", "20")]
    if section_key:
        expected_params.append((section_key, SECTION))
    assert request.path == path.replace("{section}", SECTION)
    assert request.params == tuple(expected_params)
    assert request.shared is shared
    depends = bool(section_key) or "{section}" in path
    assert request.section == (SECTION if depends else "")


@pytest.mark.parametrize("audience", AUDIENCES)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_detail_path_escapes_the_id_and_never_sends_the_section(name: str, audience: str) -> None:
    _, _, _, shared = _variant(name, audience)
    request = plan_detail(CATALOGUE.by_name[name], audience, "id 1/2")
    assert request.path == f"{API}/{EXPECTED[name].resource}/id%201%2F2"
    assert request.params == ()
    assert request.section == ""
    assert request.shared is shared


@pytest.mark.parametrize("audience", AUDIENCES)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_filter_alias_of_the_variant_is_applied(name: str, audience: str) -> None:
    _, section_key, aliases, _ = _variant(name, audience)
    filters = {key: f"v-{key}" for key in aliases}
    filters["somethingelse"] = "kept"
    params = dict(plan_list(CATALOGUE.by_name[name], audience, SECTION, ListQuery(filters=filters)).params)
    for key, target in aliases.items():
        if not target:
            assert key not in params
            assert target not in params
        elif target != section_key:
            assert params[target] == f"v-{key}", (key, target)
    assert params["somethingelse"] == "kept"
    if section_key:
        assert params[section_key] == SECTION


def test_full_query_string_order_and_names() -> None:
    query = ListQuery.from_payload(
        {
            "page": 3,
            "limit": 50,
            "search": " pizza ",
            "sortBy": "name",
            "sortOrder": "desc",
            "filters": {"restaurantId": "r-9", "Status": "OPEN", "ownerId": "u-1", "Foo_Bar": "x"},
        }
    )
    request = plan_list(CATALOGUE.by_name["reservations"], "user", SECTION, query)
    assert request.path == f"{API}/reservations"
    assert request.params == (
        ("page", "3"),
        ("limit", "50"),
        ("q", "pizza"),
        ("sortBy", "name"),
        ("sortOrder", "DESC"),
        ("foo_bar", "x"),
        ("restaurantId", "r-9"),
        ("status", "OPEN"),
    )


def test_empty_search_and_sort_are_left_out() -> None:
    query = ListQuery(search="", sort_by="", sort_order="")
    assert plan_list(CATALOGUE.by_name["reviews"], "user", SECTION, query).params == (
        ("page", "1"),
        ("limit", "20"),
    )


@pytest.mark.parametrize("key", ["ownerId", "ownerid", "OWNERID", "OwnerID"])
@pytest.mark.parametrize("audience", AUDIENCES)
def test_owner_id_is_dropped_in_any_case(key: str, audience: str) -> None:
    # ListQuery built directly (not via from_payload) keeps the caller's case: the planner
    # must lower-case on its own.
    for name in ("reservations", "tables", "reviews", "payments"):
        params = plan_list(CATALOGUE.by_name[name], audience, SECTION, ListQuery(filters={key: "u-1"})).params
        assert all(k.lower() != "ownerid" for k, _ in params), (name, params)


def test_unknown_filter_keys_pass_through_lower_cased() -> None:
    # objects has no alias table: a filter key comes out lower-cased, as in the reference.
    params = dict(
        plan_list(
            CATALOGUE.by_name["objects"], "user", SECTION, ListQuery(filters={"ShapeType": "r-1"})
        ).params
    )
    assert params == {"page": "1", "limit": "20", "shapetype": "r-1"}


def test_reviews_alias_restaurant_id() -> None:
    # Our fix of reference §13.15: the reviews list is filtered by restaurantId, not restaurantid.
    params = dict(
        plan_list(
            CATALOGUE.by_name["reviews"], "user", SECTION, ListQuery(filters={"RestaurantId": "r-1"})
        ).params
    )
    assert params == {"page": "1", "limit": "20", "restaurantId": "r-1"}


@pytest.mark.parametrize(
    ("name", "audience", "key"),
    [
        ("tables", "user", "sectionId"),
        ("tables", "admin", "sectionId"),
        ("reservations", "owner", "restaurantId"),
        ("sections", "owner", "restaurantId"),
        ("payments", "owner", "restaurantId"),
        ("subscriptions", "owner", "restaurantId"),
    ],
)
def test_the_section_query_key_overrides_a_same_named_filter(name: str, audience: str, key: str) -> None:
    query = ListQuery(filters={key.lower(): "other", key: "other-too"})
    params = plan_list(CATALOGUE.by_name[name], audience, SECTION, query).params
    assert [value for k, value in params if k == key] == [SECTION]


@pytest.mark.parametrize("reserved", ["page", "limit"])
def test_a_filter_cannot_override_paging(reserved: str) -> None:
    # Otherwise {"filters": {"limit": "100000"}} would bypass the limit of 100.
    query = ListQuery.from_payload({"page": 2, "limit": 10, "filters": {reserved: "100000"}})
    params = dict(plan_list(CATALOGUE.by_name["reviews"], "user", SECTION, query).params)
    assert params["page"] == "2"
    assert params["limit"] == "10"


def test_a_filter_cannot_override_search_or_sort_when_they_are_set() -> None:
    query = ListQuery(search="pizza", filters={"q": "other"})
    assert dict(plan_list(CATALOGUE.by_name["reviews"], "user", SECTION, query).params)["q"] == "pizza"
    # without a search, a "q" filter is just an unknown filter and passes through
    query = ListQuery(filters={"q": "other"})
    assert dict(plan_list(CATALOGUE.by_name["reviews"], "user", SECTION, query).params)["q"] == "other"


def test_owner_restaurants_ignore_the_section() -> None:
    request = plan_list(CATALOGUE.by_name["restaurants"], "owner", "anything", ListQuery())
    assert request.path == f"{API}/restaurants/me"
    assert request.section == ""
    assert request.shared is False


def test_owner_tables_put_the_escaped_section_in_the_path() -> None:
    request = plan_list(CATALOGUE.by_name["tables"], "owner", "a/b c", ListQuery())
    assert request.path == f"{API}/tables/section/a%2Fb%20c"
    assert request.params == (("page", "1"), ("limit", "20"))
    assert request.section == "a/b c"


def test_an_empty_section_sends_no_section_key() -> None:
    # The service maps the ADMIN wildcard section to "" (every section).
    request = plan_list(CATALOGUE.by_name["tables"], "admin", "", ListQuery())
    assert request.params == (("page", "1"), ("limit", "20"))
    assert request.section == ""


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("abc-123", "abc-123"),
        ("a/b", "a%2Fb"),
        ("a b", "a%20b"),
        ("a?b#c", "a%3Fb%23c"),
        ("100%", "100%25"),
        ("ñ", "%C3%B1"),
        (".", "%2E"),
        ("..", "%2E%2E"),
        ("...", "..."),
        ("a.b", "a.b"),
        ("a+b", "a%2Bb"),
    ],
)
def test_path_segment_escaping(raw: str, escaped: str) -> None:
    assert path_segment(raw) == escaped


def test_detail_with_a_dot_segment_id_cannot_reach_another_endpoint() -> None:
    request = plan_detail(CATALOGUE.by_name["tables"], "user", "..")
    assert request.path == f"{API}/tables/%2E%2E"


def test_owner_detail_paths() -> None:
    assert plan_detail(CATALOGUE.by_name["restaurants"], "owner", "r1").path == f"{API}/restaurants/r1"
    assert plan_detail(CATALOGUE.by_name["tables"], "owner", "t1").path == f"{API}/tables/t1"


def test_an_entity_without_rest_is_unsupported() -> None:
    from dataclasses import replace

    spec = replace(CATALOGUE.by_name["reviews"], rest=None, owner_rest=None)
    with pytest.raises(SnapshotUnsupported):
        plan_list(spec, "user", SECTION, ListQuery())
    with pytest.raises(SnapshotUnsupported):
        plan_detail(spec, "user", "x")


def test_snapshot_request_defaults() -> None:
    request = SnapshotRequest("/x")
    assert (request.params, request.shared, request.section) == ((), True, "")


@pytest.mark.parametrize(
    ("body", "payload"),
    [
        ({"data": {"id": "t1"}}, {"id": "t1"}),
        (
            {"data": [{"id": "t1"}], "pagination": {"page": 1}},
            {"data": [{"id": "t1"}], "pagination": {"page": 1}},
        ),
        ({"data": None}, {"data": None}),
        ({"data": "text"}, {"data": "text"}),
        ({"id": "t1"}, {"id": "t1"}),
        ({}, {}),
        ([1, 2], {"items": [1, 2]}),
        ([], {"items": []}),
        ("text", {"value": "text"}),
        (42, {"value": 42}),
        (None, {"value": None}),
        (True, {"value": True}),
    ],
)
def test_unwrap_rules(body: Any, payload: Any) -> None:
    assert unwrap(body) == payload
