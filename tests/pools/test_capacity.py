"""Capacity is changed only under a row lock and never goes below zero."""

import random
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from core.exceptions import ConflictError, RuleViolation
from pools.models import ResourcePool
from pools.services import pool_heartbeat, pool_release_cards, pool_reserve_cards
from tests.factories import pool_factory
from tests.threads import run_concurrently


@pytest.mark.django_db(transaction=True)
def test_concurrent_reservations_never_take_more_cards_than_are_free() -> None:
    pool = pool_factory(cards=100)
    won: list[int] = []
    refused: list[str] = []

    def reserve() -> None:
        try:
            pool_reserve_cards(pool=pool, cards=5)
            won.append(5)
        except RuleViolation as exc:
            refused.append(exc.code)

    run_concurrently([reserve for _ in range(40)])

    pool.refresh_from_db()
    assert len(won) == 20
    assert set(refused) == {"no_capacity"}
    assert (pool.reserved_cards, pool.free_cards) == (100, 0)


@pytest.mark.django_db(transaction=True)
def test_capacity_stays_consistent_when_heartbeats_and_reservations_race() -> None:
    pool = pool_factory(cards=100)
    rng = random.Random(7)
    won: list[int] = []
    base = timezone.now()

    def reserve(cards: int) -> Callable[[], None]:
        def job() -> None:
            try:
                pool_reserve_cards(pool=pool, cards=cards)
                won.append(cards)
            except RuleViolation:
                pass

        return job

    def heartbeat(healthy: int, seconds: int) -> Callable[[], None]:
        return lambda: pool_heartbeat(pool=pool, healthy_cards=healthy, observed_at=base + timedelta(seconds=seconds))

    jobs = [reserve(rng.randint(1, 9)) for _ in range(30)]
    jobs += [heartbeat(rng.randint(40, 100), seconds) for seconds in range(1, 16)]
    run_concurrently(jobs)

    pool.refresh_from_db()
    assert pool.reserved_cards == sum(won)
    assert pool.reserved_cards <= pool.cards
    assert pool.free_cards == max(pool.healthy_cards - pool.reserved_cards, 0) >= 0
    assert pool.last_heartbeat_at == base + timedelta(seconds=15)


@pytest.mark.django_db(transaction=True)
def test_concurrent_releases_never_drive_reserved_cards_below_zero() -> None:
    pool = pool_factory(cards=100)
    pool_reserve_cards(pool=pool, cards=10)
    released: list[int] = []

    def release() -> None:
        try:
            pool_release_cards(pool=pool, cards=1)
            released.append(1)
        except ConflictError as exc:
            assert exc.code == "release_exceeds_reserved"

    run_concurrently([release for _ in range(25)])

    pool.refresh_from_db()
    assert len(released) == 10
    assert pool.reserved_cards == 0


@pytest.mark.django_db
def test_the_database_refuses_negative_or_excess_reserved_cards() -> None:
    pool = pool_factory(cards=100)

    for value in (-1, 101):
        with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("UPDATE pools_resourcepool SET reserved_cards = %s WHERE id = %s", [value, pool.pk])


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ({"status": ResourcePool.Status.SUSPENDED}, "suspended"),
        ({"status": ResourcePool.Status.PENDING}, "pending"),
        ({"last_heartbeat_at": None}, "heartbeat"),
    ],
)
def test_a_pool_out_of_the_market_takes_no_reservation(setup: dict, reason: str) -> None:
    pool = pool_factory(cards=100, **setup)

    with pytest.raises(RuleViolation, match=reason):
        pool_reserve_cards(pool=pool, cards=1)

    pool.refresh_from_db()
    assert pool.reserved_cards == 0
