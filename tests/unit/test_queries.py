"""ListQuery / DetailQuery: payload validation and the pagination contract (reference §5.9, §6.3)."""

from __future__ import annotations

from typing import Any

import pytest

from mesaya_realtime.domain.errors import InvalidPayload
from mesaya_realtime.domain.queries import DEFAULT_LIMIT, MAX_LIMIT, DetailQuery, ListQuery


def test_a_missing_payload_means_every_default() -> None:
    for payload in (None, {}):
        query = ListQuery.from_payload(payload)
        assert (query.page, query.limit) == (1, DEFAULT_LIMIT)
        assert (query.search, query.sort_by, query.sort_order) == ("", "", "")
        assert dict(query.filters) == {}
    assert (DEFAULT_LIMIT, MAX_LIMIT) == (20, 100)


@pytest.mark.parametrize(
    ("page", "expected"),
    [(None, 1), (0, 1), (-3, 1), (1, 1), (7, 7)],
)
def test_page_at_most_zero_becomes_one(page: int | None, expected: int) -> None:
    assert ListQuery.from_payload({"page": page}).page == expected


@pytest.mark.parametrize(
    ("limit", "expected"),
    [(None, 20), (0, 20), (-5, 20), (1, 1), (50, 50), (100, 100), (101, 100), (10_000, 100)],
)
def test_limit_defaults_to_twenty_and_caps_at_one_hundred(limit: int | None, expected: int) -> None:
    assert ListQuery.from_payload({"limit": limit}).limit == expected


def test_texts_are_trimmed_and_sort_order_upper_cased() -> None:
    query = ListQuery.from_payload({"search": "  Burger ", "sortBy": " name ", "sortOrder": " desc "})
    assert (query.search, query.sort_by, query.sort_order) == ("Burger", "name", "DESC")


def test_filters_trim_drop_empty_and_lower_case_keys() -> None:
    query = ListQuery.from_payload(
        {
            "filters": {
                " RestaurantId ": " rest-1 ",
                "Status": "CONFIRMED",
                "": "dropped",
                "   ": "dropped",
                "empty": "   ",
                "blank": "",
            }
        }
    )
    assert dict(query.filters) == {"restaurantid": "rest-1", "status": "CONFIRMED"}
    assert list(query.filters) == sorted(query.filters)


def test_a_null_filter_value_is_dropped_like_an_empty_one() -> None:
    # Go decodes null into "" for a map[string]string value; sanitising then drops it.
    assert dict(ListQuery.from_payload({"filters": {"status": None, "date": "x"}}).filters) == {"date": "x"}
    assert dict(ListQuery.from_payload({"filters": None}).filters) == {}


@pytest.mark.parametrize(
    "payload",
    [
        {"page": "2"},
        {"page": 2.0},
        {"page": True},
        {"limit": "20"},
        {"limit": [1]},
        {"search": 5},
        {"search": {"q": "x"}},
        {"sortBy": 1},
        {"sortOrder": False},
        {"filters": {"status": 1}},
        {"filters": {"status": ["a"]}},
        {"filters": {"active": True}},
        {"filters": ["status", "a"]},
        {"filters": "status=a"},
        {"search": "x" * 1025},
        {"filters": {f"k{i}": "v" for i in range(33)}},
        "page=2",
        ["page", 2],
        5,
    ],
)
def test_wrongly_typed_list_payloads_are_invalid(payload: Any) -> None:
    with pytest.raises(InvalidPayload) as raised:
        ListQuery.from_payload(payload)
    assert raised.value.reason == "invalid payload"


def test_unknown_payload_keys_are_ignored() -> None:
    assert ListQuery.from_payload({"page": 2, "extra": {"x": 1}}).page == 2


def test_canonical_key_lowers_search_and_sort_by_and_sorts_filters() -> None:
    query = ListQuery.from_payload(
        {
            "page": 2,
            "limit": 50,
            "search": "Burger",
            "sortBy": "Name",
            "sortOrder": "asc",
            "filters": {"status": "OPEN", "date": "2026-01-01"},
        }
    )
    assert query.canonical_key == (
        "page=2&limit=50&search=burger&sortBy=name&sortOrder=ASC&filters=date=2026-01-01;status=OPEN"
    )
    assert ListQuery.from_payload({}).canonical_key == "page=1&limit=20&search=&sortBy=&sortOrder="


def test_equal_queries_have_equal_keys() -> None:
    one = ListQuery.from_payload({"filters": {"b": "2", "A": "1"}, "sortOrder": "desc"})
    two = ListQuery.from_payload({"filters": {"a": "1", "b": "2"}, "sortOrder": " DESC "})
    assert one.canonical_key == two.canonical_key


def test_metadata_has_page_limit_non_empty_texts_and_filters() -> None:
    query = ListQuery.from_payload(
        {"page": 3, "sortOrder": "desc", "filters": {"Status": "CONFIRMED", "restaurantId": "rest-1"}}
    )
    assert query.metadata() == {
        "page": "3",
        "limit": "20",
        "sortOrder": "DESC",
        "status": "CONFIRMED",
        "restaurantid": "rest-1",
    }
    full = ListQuery.from_payload({"search": "a", "sortBy": "b"}).metadata()
    assert full == {"page": "1", "limit": "20", "search": "a", "sortBy": "b"}


def test_a_filter_named_page_does_not_hide_the_real_page() -> None:
    assert ListQuery.from_payload({"page": 2, "filters": {"page": "9"}}).metadata()["page"] == "2"


def test_detail_query_takes_a_trimmed_id() -> None:
    assert DetailQuery.from_payload({"id": " table-17 "}).resource_id == "table-17"


@pytest.mark.parametrize(
    "payload",
    [
        None,
        {},
        {"id": ""},
        {"id": "   "},
        {"id": None},
        {"id": 17},
        {"id": ["a"]},
        {"id": "x" * 1025},
        "table-1",
        ["table-1"],
    ],
)
def test_detail_payload_without_a_usable_id_is_invalid(payload: Any) -> None:
    with pytest.raises(InvalidPayload):
        DetailQuery.from_payload(payload)
