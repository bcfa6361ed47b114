"""The entity catalogue: the URL normalisation table (reference §4.1) and every entity's entry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from mesaya_realtime.domain.catalogue import (
    ADMIN,
    ALL_ROLES,
    CATALOGUE,
    ENTITIES,
    OWNER,
    USER,
    Catalogue,
    DeliveryRule,
    EntitySpec,
    RestVariant,
    Visibility,
)

STAFF = frozenset({ADMIN, OWNER})
ADMIN_ONLY = frozenset({ADMIN})

# Reference §4.1, with this gateway's deliberate changes: `section` is the legacy default
# route (-> "", the default entity) while `sections` names the sections entity, and the
# documented-but-unreachable `owner(s)` / `auth*` / `user(s)` aliases reach the ADMIN-only
# `users` entity instead of a 404.
NORMALIZATION = [
    ("", ""),
    ("-", ""),
    ("default", ""),
    ("DEFAULT", ""),
    ("section", ""),
    (" Section ", ""),
    ("sections", "sections"),
    ("restaurant", "restaurants"),
    ("restaurants", "restaurants"),
    (" Restaurant ", "restaurants"),
    ("RESTAURANTS", "restaurants"),
    ("table", "tables"),
    ("tables", "tables"),
    ("reservation", "reservations"),
    ("reservations", "reservations"),
    ("review", "reviews"),
    ("reviews", "reviews"),
    ("sectionobject", "section-objects"),
    ("sectionobjects", "section-objects"),
    ("section-object", "section-objects"),
    ("section-objects", "section-objects"),
    ("section_object", "section-objects"),
    ("section_objects", "section-objects"),
    ("Section_Object", "section-objects"),
    ("object", "objects"),
    ("objects", "objects"),
    ("menu", "menus"),
    ("menus", "menus"),
    ("dish", "dishes"),
    ("dishes", "dishes"),
    ("image", "images"),
    ("images", "images"),
    ("payment", "payments"),
    ("payments", "payments"),
    ("subscription", "subscriptions"),
    ("subscriptions", "subscriptions"),
    ("subscription-plan", "subscription-plans"),
    ("subscription-plans", "subscription-plans"),
    ("subscription_plan", "subscription-plans"),
    ("subscription_plans", "subscription-plans"),
    ("subscriptionplan", "subscription-plans"),
    ("subscriptionplans", "subscription-plans"),
    ("user", "users"),
    ("users", "users"),
    (" users ", "users"),
    ("auth-user", "users"),
    ("auth-users", "users"),
    ("auth_user", "users"),
    ("auth_users", "users"),
    ("authuser", "users"),
    ("authusers", "users"),
    ("auth", "users"),
    ("owner", "users"),
    ("owners", "users"),
    ("owner-upgrade", "owner-upgrades"),
    ("owner-upgrades", "owner-upgrades"),
    ("owner_upgrade", "owner-upgrades"),
    ("owner_upgrades", "owner-upgrades"),
    ("ownerupgrade", "owner-upgrades"),
    ("ownerupgrades", "owner-upgrades"),
    ("custom-entity", "custom-entity"),
    (" Custom-Entity ", "custom-entity"),
]


@pytest.mark.parametrize(("raw", "expected"), NORMALIZATION)
def test_normalize(raw: str, expected: str) -> None:
    assert CATALOGUE.normalize(raw) == expected


def test_resolve_returns_the_entry_or_none() -> None:
    assert CATALOGUE.resolve(" Table ") is CATALOGUE.by_name["tables"]
    assert CATALOGUE.resolve("auth_user") is CATALOGUE.by_name["users"]
    assert CATALOGUE.resolve("custom-entity") is None
    assert CATALOGUE.resolve("default") is None


def test_the_thirteen_reachable_reference_entities_and_the_two_admin_ones() -> None:
    assert [e.name for e in ENTITIES] == [
        "restaurants",
        "tables",
        "reservations",
        "reviews",
        "sections",
        "objects",
        "menus",
        "dishes",
        "images",
        "section-objects",
        "payments",
        "subscriptions",
        "subscription-plans",
        "users",
        "owner-upgrades",
    ]


def test_an_alias_naming_two_entities_is_refused() -> None:
    first = CATALOGUE.by_name["tables"]
    clash = EntitySpec(
        name="boards",
        aliases=("table",),
        plural="boards",
        singular="board",
        roles=None,
        detail_id_key="boardId",
        rest=None,
    )
    with pytest.raises(ValueError, match="table"):
        Catalogue((first, clash))


def test_role_policy_is_any_role_upper_cased_and_none_means_any_token() -> None:
    payments = CATALOGUE.by_name["payments"]
    assert payments.allows(("owner",))
    assert payments.allows(("USER", "Admin"))
    assert not payments.allows(("USER",))
    assert not payments.allows(())
    open_entity = EntitySpec(
        name="open",
        aliases=(),
        plural="opens",
        singular="open",
        roles=None,
        detail_id_key="openId",
        rest=None,
    )
    assert open_entity.allows(())


def test_rest_variant_picks_owner_only_for_owners() -> None:
    tables = CATALOGUE.by_name["tables"]
    assert tables.rest_variant("owner") is tables.owner_rest
    assert tables.rest_variant("admin") is tables.rest
    assert tables.rest_variant("user") is tables.rest
    reviews = CATALOGUE.by_name["reviews"]
    assert reviews.rest_variant("owner") is reviews.rest


@pytest.mark.parametrize(
    ("topic", "subtype", "expected"),
    [
        ("mesa-ya.menus.events", "", "menus"),
        ("mesa-ya.menus.events", "menu", "menus"),
        ("mesa-ya.menus.events", "dish", "dishes"),
        ("mesa-ya.menus.events", " Dish ", "dishes"),
        ("mesa-ya.subscriptions.events", "", "subscriptions"),
        ("mesa-ya.subscriptions.events", "subscription", "subscriptions"),
        ("mesa-ya.subscriptions.events", "plan", "subscription-plans"),
        ("mesa-ya.tables.events", "", "tables"),
        ("mesa-ya.auth.events", "", "users"),
        ("mesa-ya.owner-upgrade.events", "", "owner-upgrades"),
        ("unknown.topic", "", None),
        ("mesa-ya.menus.events", "spaceship", None),
    ],
)
def test_entity_for_event(topic: str, subtype: str, expected: str | None) -> None:
    spec = CATALOGUE.entity_for_event(topic, subtype)
    assert (spec.name if spec else None) == expected


def test_entity_for_event_uses_the_configured_topic_map_first() -> None:
    spec = CATALOGUE.entity_for_event("custom.topic", "", {"custom.topic": "table"})
    assert spec is CATALOGUE.by_name["tables"]


def test_default_topics_cover_every_entity() -> None:
    topics = CATALOGUE.default_topics()
    assert set(topics) == {e.name for e in ENTITIES}
    assert topics["dishes"] == ("mesa-ya.menus.events",)


def _rest(
    resource: str,
    aliases: Mapping[str, str] | None = None,
    section_key: str | None = None,
    shared: bool = True,
) -> dict[str, Any]:
    return {
        "list_path": f"/api/v1/{resource}",
        "detail_path": f"/api/v1/{resource}/{{id}}",
        "filter_aliases": dict(aliases or {}),
        "section_query_key": section_key,
        "shared": shared,
    }


RESTAURANT_ALIAS = {"restaurantid": "restaurantId"}
PAYMENT_ALIASES = {
    "status": "status",
    "type": "type",
    "reservationid": "reservationId",
    "restaurantid": "restaurantId",
    "startdate": "startDate",
    "enddate": "endDate",
    "minamount": "minAmount",
    "maxamount": "maxAmount",
}
SCOPE_BY_RESTAURANT = ("data.restaurantId", "metadata.restaurant_id")
USER_PATHS = ("data.userId", "metadata.user_id")

EXPECTED: dict[str, dict[str, Any]] = {
    "restaurants": {
        "aliases": {"restaurant", "restaurants"},
        "list": ("list_restaurants", "list", "fetch_all"),
        "detail": ("get_restaurant", "detail", "fetch_one"),
        "roles": ALL_ROLES,
        "id_key": "restaurantId",
        "rest": _rest("restaurants"),
        "owner": {
            "list_path": "/api/v1/restaurants/me",
            "detail_path": "/api/v1/restaurants/{id}",
            "filter_aliases": {},
            "section_query_key": None,
            "shared": False,
        },
        "topics": ("mesa-ya.restaurants.events",),
        "subtypes": (),
        "delivery": DeliveryRule(Visibility.PUBLIC),
    },
    "tables": {
        "aliases": {"table", "tables"},
        "list": ("list_tables", "list", "fetch_all"),
        "detail": ("get_table", "detail", "fetch_one"),
        "roles": ALL_ROLES,
        "id_key": "tableId",
        # Deliberate: the default variant sends the section (reference §13.15).
        "rest": _rest("tables", {**RESTAURANT_ALIAS, "sectionid": "sectionId"}, "sectionId"),
        "owner": {
            "list_path": "/api/v1/tables/section/{section}",
            "detail_path": "/api/v1/tables/{id}",
            "filter_aliases": {**RESTAURANT_ALIAS, "sectionid": "sectionId"},
            "section_query_key": None,
            "shared": False,
        },
        "topics": ("mesa-ya.tables.events",),
        "subtypes": (),
        "delivery": DeliveryRule(Visibility.SCOPED, scope_paths=("data.sectionId",)),
    },
    "reservations": {
        "aliases": {"reservation", "reservations"},
        "list": ("list_reservations", "list", "fetch_all"),
        "detail": ("get_reservation", "detail", "fetch_one"),
        "roles": ALL_ROLES,
        "id_key": "reservationId",
        "rest": _rest("reservations", {"status": "status", **RESTAURANT_ALIAS, "date": "date"}, shared=False),
        "owner": _rest(
            "reservations",
            {"status": "status", **RESTAURANT_ALIAS, "date": "date", "ownerid": ""},
            "restaurantId",
            shared=False,
        ),
        "topics": ("mesa-ya.reservations.events",),
        "subtypes": (),
        "delivery": DeliveryRule(
            Visibility.PRIVATE, SCOPE_BY_RESTAURANT, USER_PATHS, owner_must_own_section=True
        ),
    },
    "reviews": {
        "aliases": {"review", "reviews"},
        "list": ("list_reviews", "list", "fetch_all"),
        "detail": ("get_review", "detail", "fetch_one"),
        "roles": ALL_ROLES,
        "id_key": "reviewId",
        "rest": _rest("reviews", RESTAURANT_ALIAS),
        "owner": None,
        "topics": ("mesa-ya.reviews.events",),
        "subtypes": (),
        "delivery": DeliveryRule(Visibility.SCOPED, SCOPE_BY_RESTAURANT),
    },
    "sections": {
        "aliases": {"sections"},
        "list": ("list_sections", "list", "fetch_all"),
        "detail": ("get_section", "detail", "fetch_one"),
        "roles": ALL_ROLES,
        "id_key": "resourceSectionId",
        "rest": _rest("sections", RESTAURANT_ALIAS),
        "owner": _rest("sections", RESTAURANT_ALIAS, "restaurantId", shared=False),
        "topics": ("mesa-ya.sections.events",),
        "subtypes": (),
        "delivery": DeliveryRule(Visibility.SCOPED, (*SCOPE_BY_RESTAURANT, "data.id")),
    },
    "objects": {
        "aliases": {"object", "objects"},
        "list": ("list_objects", "list", "fetch_all"),
        "detail": ("get_object", "detail", "fetch_one"),
        "roles": ALL_ROLES,
        "id_key": "objectId",
        "rest": _rest("objects"),
        "owner": None,
        "topics": ("mesa-ya.objects.events",),
        "subtypes": (),
        "delivery": DeliveryRule(Visibility.PUBLIC),
    },
    "menus": {
        "aliases": {"menu", "menus"},
        "list": ("list_menus", "list", "fetch_all"),
        "detail": ("get_menu", "detail", "fetch_one"),
        "roles": ALL_ROLES,
        "id_key": "menuId",
        "rest": _rest("menus", RESTAURANT_ALIAS),
        "owner": None,
        "topics": ("mesa-ya.menus.events",),
        "subtypes": ("menu",),
        "delivery": DeliveryRule(Visibility.SCOPED, SCOPE_BY_RESTAURANT),
    },
    "dishes": {
        "aliases": {"dish", "dishes"},
        "list": ("list_dishes", "list", "fetch_all"),
        "detail": ("get_dish", "detail", "fetch_one"),
        "roles": ALL_ROLES,
        "id_key": "dishId",
        "rest": _rest("dishes", RESTAURANT_ALIAS),
        "owner": None,
        "topics": ("mesa-ya.menus.events",),
        "subtypes": ("dish",),
        "delivery": DeliveryRule(Visibility.SCOPED, SCOPE_BY_RESTAURANT),
    },
    "images": {
        "aliases": {"image", "images"},
        "list": ("list_images", "list", "fetch_all"),
        "detail": ("get_image", "detail", "fetch_one"),
        "roles": ALL_ROLES,
        "id_key": "imageId",
        "rest": _rest("images", {"entityid": "entityId"}),
        "owner": None,
        "topics": ("mesa-ya.images.events",),
        "subtypes": (),
        "delivery": DeliveryRule(Visibility.PUBLIC),
    },
    "section-objects": {
        "aliases": {
            "sectionobject",
            "sectionobjects",
            "section-object",
            "section-objects",
            "section_object",
            "section_objects",
        },
        "list": ("list_section_objects", "list", "fetch_all"),
        "detail": ("get_section_object", "detail", "fetch_one"),
        "roles": STAFF,
        "id_key": "sectionObjectId",
        "rest": _rest("section-objects"),
        "owner": None,
        "topics": ("mesa-ya.section-objects.events",),
        "subtypes": (),
        "delivery": DeliveryRule(Visibility.SCOPED, ("data.sectionId",)),
    },
    "payments": {
        "aliases": {"payment", "payments"},
        "list": ("list_payments", "list", "fetch_all"),
        "detail": ("get_payment", "detail", "fetch_one"),
        "roles": STAFF,
        "id_key": "paymentId",
        "rest": _rest("payments", PAYMENT_ALIASES, shared=False),
        "owner": _rest("payments", PAYMENT_ALIASES, "restaurantId", shared=False),
        "topics": ("mesa-ya.payments.events",),
        "subtypes": (),
        "delivery": DeliveryRule(
            Visibility.PRIVATE, SCOPE_BY_RESTAURANT, USER_PATHS, owner_must_own_section=True
        ),
    },
    "subscriptions": {
        "aliases": {"subscription", "subscriptions"},
        "list": ("list_subscriptions", "list", "fetch_all"),
        "detail": ("get_subscription", "detail", "fetch_one"),
        "roles": STAFF,
        "id_key": "subscriptionId",
        "rest": _rest("subscriptions", shared=False),
        "owner": _rest("subscriptions", None, "restaurantId", shared=False),
        "topics": ("mesa-ya.subscriptions.events",),
        "subtypes": ("subscription",),
        "delivery": DeliveryRule(
            Visibility.PRIVATE, SCOPE_BY_RESTAURANT, USER_PATHS, owner_must_own_section=True
        ),
    },
    "subscription-plans": {
        "aliases": {
            "subscription-plan",
            "subscription-plans",
            "subscription_plan",
            "subscription_plans",
            "subscriptionplan",
            "subscriptionplans",
        },
        "list": ("list_subscription_plans", "list", "fetch_all"),
        "detail": ("get_subscription_plan", "detail", "fetch_one"),
        "roles": ALL_ROLES,
        "id_key": "subscriptionPlanId",
        "rest": _rest("subscription-plans"),
        "owner": None,
        "topics": ("mesa-ya.subscriptions.events",),
        "subtypes": ("plan",),
        "delivery": DeliveryRule(Visibility.PUBLIC),
    },
    "users": {
        "aliases": {
            "user",
            "users",
            "auth-user",
            "auth-users",
            "auth_user",
            "auth_users",
            "authuser",
            "authusers",
            "auth",
            "owner",
            "owners",
        },
        "list": ("list_users", "list", "fetch_all", "list_auth_users", "list_owners"),
        "detail": ("get_user", "detail", "fetch_one", "get_auth_user", "get_owner"),
        "roles": ADMIN_ONLY,
        "id_key": "userId",
        "rest": _rest("users", {"status": "status", "role": "role", **RESTAURANT_ALIAS, "active": "active"}),
        "owner": None,
        "topics": ("mesa-ya.auth.events",),
        "subtypes": (),
        "delivery": DeliveryRule(Visibility.PUBLIC),
    },
    "owner-upgrades": {
        "aliases": {
            "owner-upgrade",
            "owner-upgrades",
            "owner_upgrade",
            "owner_upgrades",
            "ownerupgrade",
            "ownerupgrades",
        },
        "list": ("list_owner_upgrades", "list", "fetch_all", "list_owner_upgrade_requests"),
        "detail": ("get_owner_upgrade", "detail", "fetch_one", "get_owner_upgrade_request"),
        "roles": ADMIN_ONLY,
        "id_key": "requestId",
        "rest": _rest("owner-upgrades", {"status": "status", "userid": "userId"}),
        "owner": None,
        "topics": ("mesa-ya.owner-upgrade.events",),
        "subtypes": (),
        "delivery": DeliveryRule(Visibility.PUBLIC),
    },
}


def _variant(variant: RestVariant | None) -> dict[str, Any] | None:
    if variant is None:
        return None
    return {
        "list_path": variant.list_path,
        "detail_path": variant.detail_path,
        "filter_aliases": dict(variant.filter_aliases),
        "section_query_key": variant.section_query_key,
        "shared": variant.shared,
    }


def test_every_entity_has_an_expected_entry() -> None:
    assert set(EXPECTED) == set(CATALOGUE.by_name)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_catalogue_entry(name: str) -> None:
    spec = CATALOGUE.by_name[name]
    expected = EXPECTED[name]
    assert set(spec.aliases) == expected["aliases"]
    for alias in spec.aliases:
        assert CATALOGUE.normalize(alias) == name
    assert spec.list_actions == expected["list"]
    assert spec.detail_actions == expected["detail"]
    assert spec.roles == expected["roles"]
    assert spec.detail_id_key == expected["id_key"]
    assert _variant(spec.rest) == expected["rest"]
    assert _variant(spec.owner_rest) == expected["owner"]
    assert spec.kafka_topics == expected["topics"]
    assert spec.kafka_subtypes == expected["subtypes"]
    assert spec.delivery == expected["delivery"]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_role_outcome_of_the_policy(name: str) -> None:
    spec = CATALOGUE.by_name[name]
    for role in (ADMIN, OWNER, USER):
        assert spec.allows((role,)) == (role in expected_roles(name))
        assert spec.allows((role.lower(),)) == (role in expected_roles(name))
    assert not spec.allows(())


def expected_roles(name: str) -> frozenset[str]:
    roles: frozenset[str] = EXPECTED[name]["roles"]
    return roles


def test_only_entities_with_a_restaurants_private_data_check_ownership() -> None:
    checked = {spec.name for spec in CATALOGUE.entities if spec.delivery.owner_must_own_section}
    assert checked == {"reservations", "payments", "subscriptions"}
    for name in checked:
        # their section is a restaurant id: the rule scopes by restaurant
        assert CATALOGUE.by_name[name].delivery.scope_paths == SCOPE_BY_RESTAURANT
