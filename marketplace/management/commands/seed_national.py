"""Seed the national platform of early 2026: 155 providers, 578 pools, 720,000 GPU cards.

``manage.py seed_national [--seed 42] [--scale 1.0] [--reset]``

Deterministic for a seed: every draw comes from ``random.Random(seed)`` in list
order, and ids from a second generator seeded the same way. Rows go in with
``bulk_create`` in one transaction, because the per-row services would take
minutes; each pool's first price plan is computed with ``pools.tariffs`` exactly
as ``pools.services`` does it. Every seeded organization's slug starts with
``nat-``: that is how ``--reset`` finds what an earlier run created.
"""

import math
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TypeVar

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.db.models import Count, ProtectedError, Sum
from django.utils import timezone

from core.context import runs_as_command
from marketplace.models import PriceIndexSnapshot
from marketplace.price_index import offers_from_json, offers_json, snapshot_index
from marketplace.services import price_index_snapshot
from organizations.models import Organization
from organizations.services import api_key_create
from organizations.validators import credit_code_check_char
from pools.models import (
    MAX_POOL_CARDS,
    GpuModel,
    Heartbeat,
    Hub,
    ModelEndpoint,
    PoolStatusChange,
    PricePlan,
    ResourcePool,
)
from pools.reference_data import HUBS
from pools.services import invalidate_offer_snapshot
from pools.tariffs import default_factors, hour_bands, hour_prices

T = TypeVar("T")

SLUG_PREFIX = "nat-"
BY = "command:seed_national"
BATCH_SIZE = 1000
PROVIDERS, POOLS, CARDS, BUYERS = 155, 578, 720_000, 3000
MAX_SCALE = 50.0
HUB_PROVINCE_SHARE = 0.75  # of pools in the hub's own provinces, the rest in the provinces it serves
HISTORY_DAYS = 90  # of the price index
SERVER_CARDS = 8  # pools are whole 8-card servers whenever the total allows it
Status = ResourcePool.Status

TRAINING, INFERENCE = "training", "inference"


@dataclass(frozen=True)
class GpuProfile:
    share: int  # per mille of all cards
    east_price: Decimal  # CNY per card-hour, flat hours, a typical east pool
    use: str  # training pools go west, inference pools stay near users in the east
    interconnects: tuple[tuple[str, int], ...]  # (interconnect, weight)


GPU_PROFILES: dict[str, GpuProfile] = {
    "910B": GpuProfile(310, Decimal("7.90"), TRAINING, (("hccs", 6), ("roce", 4))),
    "H20": GpuProfile(190, Decimal("7.30"), INFERENCE, (("roce", 5), ("infiniband", 3), ("nvlink", 2))),
    "A800-80G": GpuProfile(90, Decimal("10.60"), TRAINING, (("infiniband", 6), ("roce", 4))),
    "A100-80G": GpuProfile(60, Decimal("11.20"), TRAINING, (("infiniband", 6), ("roce", 4))),
    "H800-80G": GpuProfile(80, Decimal("18.50"), TRAINING, (("infiniband", 7), ("roce", 3))),
    "H100-80G": GpuProfile(50, Decimal("20.50"), TRAINING, (("infiniband", 7), ("roce", 3))),
    "4090-24G": GpuProfile(80, Decimal("2.70"), INFERENCE, (("pcie", 7), ("ethernet", 3))),
    "L40S": GpuProfile(60, Decimal("4.60"), INFERENCE, (("ethernet", 6), ("roce", 4))),
    "H200-141G": GpuProfile(40, Decimal("29.50"), TRAINING, (("infiniband", 8), ("roce", 2))),
    "MLU370-X8": GpuProfile(40, Decimal("2.90"), INFERENCE, (("pcie", 5), ("ethernet", 5))),
}
# A single-node training pool talks over the accelerator's own link, not a fabric.
NODE_LINK = {"910B": "hccs"}

# code: (price level against the east average, relative number of pools). The
# west's cheap green power makes it 10-20% cheaper.
HUB_PROFILES: dict[str, tuple[float, float]] = {
    "jingjinji": (1.03, 1.1),
    "yangtze": (1.04, 1.2),
    "greater_bay": (1.02, 0.9),
    "chengyu": (0.96, 0.7),
    "inner_mongolia": (0.84, 1.0),
    "guizhou": (0.88, 0.8),
    "gansu": (0.85, 0.7),
    "ningxia": (0.83, 0.9),
}

# (per mille of pools, smallest, largest cards): log-uniform within a class, so a
# few very large pools hold a large share of the cards.
SIZE_CLASSES = ((420, 8, 256), (400, 256, 2048), (140, 2048, 6144), (40, 6144, 10240))

TOKEN_GPUS = frozenset(code for code, profile in GPU_PROFILES.items() if profile.use == TRAINING) | {"H20"}
# Per million tokens, CNY, a typical east price: (input, output).
TOKEN_MODELS: dict[str, tuple[Decimal, Decimal]] = {
    "deepseek-v3": (Decimal("2.00"), Decimal("8.00")),
    "deepseek-r1": (Decimal("4.00"), Decimal("16.00")),
    "qwen3-72b": (Decimal("4.00"), Decimal("12.00")),
    "glm-4.5": (Decimal("2.00"), Decimal("8.00")),
}
# Tokens (input and output) one H100 serves per second, batched, for each model; other cards by
# their speed against it (approximations: docs/reference-data.md, "Model endpoints").
H100_TOKENS_PER_SECOND = {"deepseek-v3": 4000, "deepseek-r1": 4000, "qwen3-72b": 2500, "glm-4.5": 4000}
CARD_SPEED = {"H200-141G": 1.4, "H100-80G": 1.0, "H800-80G": 1.0, "H20": 0.6, "A800-80G": 0.6, "A100-80G": 0.6}
CARD_SPEED_OTHER = 0.7  # 910B
ENDPOINT_SHARE = 0.1  # of a pool's cards, per model it serves, in whole servers

# province: (GB/T 2260 code, cities with the hub's cluster city first, relative number of buyers)
PROVINCES: dict[str, tuple[str, tuple[str, ...], int]] = {
    "Beijing": ("11", ("Beijing",), 10),
    "Tianjin": ("12", ("Tianjin",), 3),
    "Hebei": ("13", ("Zhangjiakou", "Shijiazhuang", "Langfang", "Baoding"), 3),
    "Shanxi": ("14", ("Taiyuan", "Datong", "Yangquan"), 2),
    "Inner Mongolia": ("15", ("Hohhot", "Ulanqab", "Ordos", "Baotou"), 1),
    "Liaoning": ("21", ("Shenyang", "Dalian"), 2),
    "Jilin": ("22", ("Changchun", "Jilin"), 1),
    "Heilongjiang": ("23", ("Harbin", "Daqing"), 1),
    "Shanghai": ("31", ("Shanghai",), 10),
    "Jiangsu": ("32", ("Suzhou", "Nanjing", "Wuxi", "Nantong", "Changzhou"), 9),
    "Zhejiang": ("33", ("Hangzhou", "Jiaxing", "Ningbo", "Wenzhou", "Huzhou"), 9),
    "Anhui": ("34", ("Wuhu", "Hefei"), 3),
    "Fujian": ("35", ("Fuzhou", "Xiamen", "Quanzhou"), 3),
    "Jiangxi": ("36", ("Nanchang", "Ganzhou"), 2),
    "Shandong": ("37", ("Jinan", "Qingdao", "Yantai"), 5),
    "Henan": ("41", ("Zhengzhou", "Luoyang"), 3),
    "Hubei": ("42", ("Wuhan", "Xiangyang", "Yichang"), 4),
    "Hunan": ("43", ("Changsha", "Zhuzhou"), 3),
    "Guangdong": ("44", ("Shaoguan", "Guangzhou", "Shenzhen", "Dongguan", "Foshan"), 10),
    "Guangxi": ("45", ("Nanning", "Liuzhou"), 1),
    "Hainan": ("46", ("Haikou", "Sanya"), 1),
    "Chongqing": ("50", ("Chongqing",), 3),
    "Sichuan": ("51", ("Chengdu", "Mianyang", "Ya'an"), 4),
    "Guizhou": ("52", ("Gui'an", "Guiyang", "Zunyi"), 1),
    "Yunnan": ("53", ("Kunming", "Qujing"), 1),
    "Tibet": ("54", ("Lhasa",), 1),
    "Shaanxi": ("61", ("Xi'an", "Xianyang"), 3),
    "Gansu": ("62", ("Qingyang", "Lanzhou", "Jiuquan"), 1),
    "Qinghai": ("63", ("Xining", "Haidong"), 1),
    "Ningxia": ("64", ("Zhongwei", "Yinchuan"), 1),
    "Xinjiang": ("65", ("Urumqi", "Karamay", "Hami"), 1),
}

PROVIDER_WORDS = (
    "Tianyuan", "Zhisuan", "Xingyun", "Huasuan", "Jiuzhou", "Lingxi", "Qiming", "Hengtong", "Yunhai", "Feitian",
    "Boyuan", "Shenzhou", "Kunlun", "Taihang", "Qilian", "Helan", "Yinshan", "Wuling", "Hongyun", "Ruixin",
    "Zhongke", "Tianshu", "Xinghe", "Beidou", "Huaxia", "Changjiang", "Zhujiang", "Huanghe", "Dongfang", "Xibu",
    "Shuoyuan", "Jingwei", "Tongchuang", "Youshu", "Zhiyuan", "Lianxin", "Guangsu", "Huiju", "Pangu", "Fuxi",
    "Tiangong", "Xuanwu", "Qinglong", "Zhuque", "Suanli", "Shuguang",
)  # fmt: skip
PROVIDER_TRADES = (
    "Intelligent Computing Technology", "Cloud Computing", "Computing Power Network", "Data Technology",
    "Digital Infrastructure", "AI Computing Services", "Big Data", "Supercomputing",
)  # fmt: skip
BUYER_WORDS = (
    "Mingjing", "Ruiying", "Shengshi", "Jiahe", "Anxin", "Xinchuang", "Zhixing", "Yuanjing", "Weilai", "Chuangxiang",
    "Shuzhi", "Kaiyuan", "Haina", "Jinrui", "Lanxin", "Yixin", "Huaying", "Tongda", "Chenguang", "Qingyun",
    "Yunzhi", "Xiaoxiang", "Dingsheng", "Hanhai", "Mojing", "Shanhe", "Zhiwei", "Xinyu", "Jingxiang", "Hongtu",
)  # fmt: skip
BUYER_TRADES = (
    "AI Technology", "Vision Technology", "Intelligent Manufacturing", "Biotechnology", "Autonomous Driving",
    "Financial Technology", "Animation", "Robotics", "Medical Imaging", "E-commerce Technology",
    "Language Technology", "Smart Logistics", "Game Technology", "Speech Technology", "New Materials",
    "Meteorological Technology", "Drug Discovery", "Education Technology",
)  # fmt: skip


@dataclass
class PoolDraft:
    cards: int
    gpu: str = ""
    hub: str = ""
    province: str = ""
    city: str = ""
    provider: int = -1
    name: str = ""
    price: Decimal = Decimal(0)  # per card-hour, flat hours
    pue: Decimal = Decimal(0)
    green_share: Decimal = Decimal(0)
    interconnect: str = ""
    status: str = Status.ACTIVE
    unhealthy: int = 0
    token_prices: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class OrgDraft:
    slug: str
    legal_name: str
    credit_code: str
    province: str
    city: str
    is_sme: bool = False
    parent: int | None = None  # index of the provider whose group this company belongs to


def scaled_counts(scale: float) -> tuple[int, int, int, int]:
    """Providers, pools, cards and buyers at ``scale`` (1 = the national platform)."""
    pools = max(8, round(POOLS * scale))
    return max(1, round(PROVIDERS * scale)), pools, max(pools, round(CARDS * scale)), max(2, round(BUYERS * scale))


def credit_code(registration: str, division: str, body: str) -> str:
    first17 = f"{registration}{division}{body}"
    return first17 + credit_code_check_char(first17)


def division_code(province: str, city: str | None = None) -> str:
    code, cities, _ = PROVINCES[province]
    return f"{code}{cities.index(city) + 1:02d}00" if city else f"{code}0000"


def _price(price: Decimal) -> Decimal:
    return price.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def money(amount: Decimal) -> Decimal:
    return amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def pick(rng: random.Random, choices: list[T] | tuple[T, ...], weights: list[float] | list[int]) -> T:
    return rng.choices(choices, weights=weights)[0]


def apportion(total: int, weights: list[int], *, cap: int) -> list[int]:
    """Split ``total`` into n integers from 1 to ``cap``, the part above 1 proportional to ``weights``.

    Integer largest-remainder arithmetic, ties to the lower index: exact and the same on every machine.
    """
    n = len(weights)
    if not n * 1 <= total <= n * cap:
        raise ValueError(f"cannot split {total} into {n} parts of 1..{cap}")
    sizes, remaining, open_ = [1] * n, total - n, list(range(n))
    while remaining:
        weight = [weights[i] or 0 for i in open_]
        if not sum(weight):
            weight = [1] * len(open_)
        whole = sum(weight)
        shares = [remaining * w // whole for w in weight]
        leftover = remaining - sum(shares)
        by_fraction = sorted(range(len(open_)), key=lambda k: (-(remaining * weight[k] % whole), open_[k]))
        for k in by_fraction[:leftover]:
            shares[k] += 1
        remaining = 0
        for k, i in enumerate(open_):
            sizes[i] += shares[k]
            if sizes[i] > cap:
                remaining, sizes[i] = remaining + sizes[i] - cap, cap
        open_ = [i for i in open_ if sizes[i] < cap]
    return sizes


class NationalPlan:
    """Everything seeded, drawn from one generator in a fixed order; no database access."""

    def __init__(self, *, seed: int, scale: float) -> None:
        # Reproducible demo data, not secrets. Ids come from a generator of their own, so
        # that they never shift the other draws.
        self.rng = random.Random(seed)  # noqa: S311
        self.ids = random.Random(f"seed_national-ids-{seed}")  # noqa: S311
        self.n_providers, self.n_pools, self.n_cards, self.n_buyers = scaled_counts(scale)
        self.hubs = {hub["code"]: hub for hub in HUBS}
        self.pools = [PoolDraft(cards=cards) for cards in self._pool_sizes()]
        self._assign_gpus()
        self._assign_hubs()
        self._assign_provinces()
        self.providers = self._providers()
        self.buyers = self._buyers()
        self._pool_details()

    def _pool_sizes(self) -> list[int]:
        rng, n, total = self.rng, self.n_pools, self.n_cards
        raw = []
        for _ in range(n):
            _, low, high = pick(rng, SIZE_CLASSES, [share for share, _, _ in SIZE_CLASSES])
            raw.append(math.exp(rng.uniform(math.log(low), math.log(high))))
        unit = SERVER_CARDS if total >= SERVER_CARDS * n else 1
        units = apportion(total // unit, [round(size - 8) for size in raw], cap=MAX_POOL_CARDS // unit)
        sizes = [count * unit for count in units]
        smallest = min(range(n), key=lambda i: (sizes[i], i))
        sizes[smallest] += total - sum(sizes)  # less than one server
        return sizes

    def _assign_gpus(self) -> None:
        """Largest pools first, each to a model still short of its share of the cards."""
        models = list(GPU_PROFILES)
        short = {model: GPU_PROFILES[model].share * self.n_cards / 1000 for model in models}
        for pool in sorted(self.pools, key=lambda p: -p.cards):
            affinity = [self._gpu_affinity(model, pool.cards) for model in models]
            weights = [max(short[model], 0) * a for model, a in zip(models, affinity, strict=True)]
            pool.gpu = pick(self.rng, models, weights if sum(weights) > 0 else affinity)
            short[pool.gpu] -= pool.cards

    @staticmethod
    def _gpu_affinity(model: str, cards: int) -> float:
        if GPU_PROFILES[model].use == TRAINING:
            return 1.0 if cards >= 256 else 0.6
        if model == "H20":
            return 0.8 if cards >= 2048 else 1.0
        return 0.15 if cards >= 2048 else (1.0 if cards >= 256 else 2.0)

    def _assign_hubs(self) -> None:
        codes = list(self.hubs)
        for pool in self.pools:
            use = GPU_PROFILES[pool.gpu].use
            weights = []
            for code in codes:
                west = self.hubs[code]["region"] == "west"
                weight = HUB_PROFILES[code][1]
                if use == TRAINING and pool.cards >= 1024:
                    weight *= 3.0 if west else 0.5
                elif use == INFERENCE:
                    weight *= 0.5 if west else 2.0
                weights.append(weight)
            pool.hub = pick(self.rng, codes, weights)
        # Every hub has pools, even at the smallest scale: move one from the fullest hub.
        for code in codes:
            counts = Counter(pool.hub for pool in self.pools)
            if not counts[code]:
                fullest = max(codes, key=lambda c: (counts[c], -codes.index(c)))
                donor = max(i for i, pool in enumerate(self.pools) if pool.hub == fullest)
                self.pools[donor].hub = code

    def _assign_provinces(self) -> None:
        for pool in self.pools:
            hub = self.hubs[pool.hub]
            others = [p for p in hub["provinces"] if p not in hub["hub_provinces"]]
            own = self.rng.random() < HUB_PROVINCE_SHARE or not others
            pool.province = self.rng.choice(hub["hub_provinces"] if own else others)
        # Every province of a hub's region gets a pool when the hub has enough of them.
        for code, hub in self.hubs.items():
            for province in hub["provinces"]:
                in_hub = [i for i, pool in enumerate(self.pools) if pool.hub == code]
                counts = Counter(self.pools[i].province for i in in_hub)
                if counts[province]:
                    continue
                movable = [i for i in in_hub if counts[self.pools[i].province] > 1]
                if movable:
                    donor = max(movable, key=lambda i: (counts[self.pools[i].province], -i))
                    self.pools[donor].province = province
        for pool in self.pools:
            cities = PROVINCES[pool.province][1]
            own = pool.province in self.hubs[pool.hub]["hub_provinces"]
            pool.city = pick(self.rng, cities, [3 if own and k == 0 else 1 for k in range(len(cities))])

    def _providers(self) -> list[OrgDraft]:
        """Each provider gets one pool, then the rest go mostly to providers of the same hub, big ones more."""
        rng, n = self.rng, self.n_providers
        size = [min(rng.paretovariate(1.2), 40.0) for _ in range(n)]
        order = list(range(len(self.pools)))
        rng.shuffle(order)
        home: list[str] = []
        for p, i in enumerate(order[:n]):
            self.pools[i].provider = p
            home.append(self.pools[i].hub)
        for i in order[n:]:
            pool = self.pools[i]
            weights = [size[p] * (4 if home[p] == pool.hub else 1) for p in range(len(home))]
            pool.provider = pick(rng, list(range(len(home))), weights)
        providers, names = [], set[str]()
        for p in range(n):
            first = next((pool for pool in self.pools if pool.provider == p), None)
            province, city = (first.province, first.city) if first else ("Beijing", "Beijing")
            word = PROVIDER_WORDS[p % len(PROVIDER_WORDS)]
            name = f"{city} {word} {rng.choice(PROVIDER_TRADES)} Co., Ltd."
            for attempt in range(2, 10_000):
                if name not in names:
                    break
                name = f"{city} {word} {rng.choice(PROVIDER_TRADES)} No. {attempt} Co., Ltd."
            names.add(name)
            body = f"MAP{p + 1:06d}"
            providers.append(
                OrgDraft(
                    slug=f"{SLUG_PREFIX}provider-{p + 1:04d}",
                    legal_name=name,
                    credit_code=credit_code("91", division_code(province, city), body),
                    province=province,
                    city=city,
                )
            )
        return providers

    def _buyers(self) -> list[OrgDraft]:
        """Buyers in every province (as far as their number allows), weighted by economy; the last few
        are subsidiaries in a provider's group, for related-party checks."""
        rng, n = self.rng, self.n_buyers
        provinces = list(PROVINCES)
        weights = [PROVINCES[p][2] for p in provinces]
        related = max(1, round(n * 0.01))
        buyers = []
        for b in range(n):
            province = provinces[b] if b < len(provinces) else pick(rng, provinces, weights)
            city = rng.choice(PROVINCES[province][1])
            parent = rng.randrange(self.n_providers) if b >= n - related else None
            if parent is None:
                name = f"{city} {rng.choice(BUYER_WORDS)} {rng.choice(BUYER_TRADES)} Co., Ltd."
                is_sme = rng.random() < 0.6
            else:
                group = self.providers[parent]
                province, city = group.province, group.city
                word = PROVIDER_WORDS[parent % len(PROVIDER_WORDS)]
                name = f"{city} {word} {rng.choice(BUYER_TRADES)} Co., Ltd."
                is_sme = False
            buyers.append(
                OrgDraft(
                    slug=f"{SLUG_PREFIX}buyer-{b + 1:05d}",
                    legal_name=name,
                    credit_code=credit_code("91", division_code(province, city), f"MAB{b + 1:06d}"),
                    province=province,
                    city=city,
                    is_sme=is_sme,
                    parent=parent,
                )
            )
        return buyers

    def _pool_details(self) -> None:
        """Price, efficiency, fabric, status and health of each pool."""
        rng, numbers = self.rng, Counter[int]()
        for pool in self.pools:
            hub, profile = self.hubs[pool.hub], GPU_PROFILES[pool.gpu]
            level = HUB_PROFILES[pool.hub][0]
            numbers[pool.provider] += 1
            word = PROVIDER_WORDS[pool.provider % len(PROVIDER_WORDS)]
            pool.name = f"{word} {pool.city} {pool.gpu} pool {numbers[pool.provider]}"
            pue = hub["pue"] + Decimal(f"{rng.gauss(0, 0.03):.2f}")
            pool.pue = max(Decimal("1.05"), pue).quantize(Decimal("0.01"))
            green = hub["green_share"] + Decimal(f"{rng.gauss(0, 0.05):.3f}")
            pool.green_share = min(Decimal(1), max(Decimal(0), green)).quantize(Decimal("0.001"))
            volume = 0.97 if pool.cards >= 2048 else 1.0
            noise = min(1.1, max(0.9, rng.gauss(1, 0.05)))
            pool.price = money(profile.east_price * Decimal(f"{level * volume * noise:.6f}"))
            if profile.use == TRAINING and pool.cards <= 16:
                pool.interconnect = NODE_LINK.get(pool.gpu, "nvlink")
            else:
                links = profile.interconnects
                pool.interconnect = pick(rng, [link for link, _ in links], [weight for _, weight in links])
            draw = rng.random()
            pool.status = Status.PENDING if draw < 0.02 else Status.SUSPENDED if draw < 0.03 else Status.ACTIVE
            unhealthy = 0 if rng.random() < 0.5 else rng.randint(1, max(1, math.ceil(pool.cards * 0.02)))
            pool.unhealthy = min(unhealthy, pool.cards - 1)
            # Large models are served from cards with 64 GB and more.
            if pool.gpu in TOKEN_GPUS and rng.random() < 0.45:
                for model in sorted(rng.sample(list(TOKEN_MODELS), 2)):
                    factor = Decimal(f"{level * rng.uniform(0.9, 1.1):.6f}")
                    sides = zip(("input", "output"), TOKEN_MODELS[model], strict=True)
                    pool.token_prices[model] = {side: str(money(base * factor)) for side, base in sides}


ISSUER = OrgDraft(
    slug=f"{SLUG_PREFIX}zj-voucher-office",
    legal_name="Zhejiang Provincial Compute Voucher Office",
    credit_code=credit_code("11", "330000", "MB0000001"),
    province="Zhejiang",
    city="Hangzhou",
)
OPERATOR = OrgDraft(
    slug=f"{SLUG_PREFIX}operator",
    legal_name="Compute Grid National Platform Operations Co., Ltd.",
    credit_code=credit_code("91", "110000", "MAY000001"),
    province="Beijing",
    city="Beijing",
)


class Command(BaseCommand):
    help = (
        "Seed the national platform of early 2026 (155 providers, 578 pools, 720,000 GPU cards, 3,000 buyers, "
        "an issuer and an operator), deterministic for --seed, and print an API key for four of them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--seed", type=int, default=42, help="Random seed (default 42).")
        parser.add_argument("--scale", type=float, default=1.0, help="Size against the national platform (1.0).")
        parser.add_argument("--reset", action="store_true", help="Delete what an earlier run seeded first.")

    @runs_as_command
    def handle(self, *args: Any, seed: int, scale: float, reset: bool, **options: Any) -> None:
        if not 0 < scale <= MAX_SCALE:
            raise CommandError(f"--scale must be above 0 and at most {MAX_SCALE}.")
        started = time.monotonic()
        missing = {hub["code"] for hub in HUBS} - set(Hub.objects.values_list("code", flat=True))
        missing |= set(GPU_PROFILES) - set(GpuModel.objects.values_list("code", flat=True))
        if missing:
            raise CommandError(f"Reference data missing ({', '.join(sorted(missing))}): run migrate first.")
        plan = NationalPlan(seed=seed, scale=scale)
        with transaction.atomic():
            seeded = Organization.objects.filter(slug__startswith=SLUG_PREFIX)
            if reset:
                self._delete_seeded()
            elif seeded.exists():
                raise CommandError(
                    f"This database already holds a national seed ({seeded.count()} organizations with slugs "
                    f"starting {SLUG_PREFIX!r}). Run again with --reset to replace it."
                )
            now = timezone.now()
            providers = self._write_organizations(plan)
            self._write_pools(plan, providers, now)
            self._write_price_index_history(now)
            lines = self._create_keys()
        keys_file = settings.DATA_DIR / "national-keys.txt"
        keys_file.parent.mkdir(parents=True, exist_ok=True)
        keys_file.write_text("\n".join(lines) + "\n")
        self._summary(time.monotonic() - started)
        self.stdout.write(f"API keys (also in {keys_file}):")
        for line in lines:
            self.stdout.write("  " + line)

    def _delete_seeded(self) -> None:
        seeded = Organization.objects.filter(slug__startswith=SLUG_PREFIX)
        PriceIndexSnapshot.objects.all().delete()  # the index of the seeded market, and its history
        try:
            endpoints, _ = ModelEndpoint.objects.filter(pool__provider__in=seeded).delete()
            pools, _ = ResourcePool.objects.filter(provider__in=seeded).delete()
            subsidiaries, _ = seeded.filter(parent__isnull=False).delete()
            organizations, _ = seeded.delete()
        except ProtectedError as error:
            raise CommandError(
                f"Cannot reset: other rows still refer to seeded data ({error.args[0]}). Use a fresh database."
            ) from error
        self.stdout.write(
            f"reset: deleted {organizations + subsidiaries + pools + endpoints:,} rows of the previous seed"
        )

    def _write_organizations(self, plan: NationalPlan) -> list[Organization]:
        def build(draft: OrgDraft, kind: str, parent: Organization | None = None) -> Organization:
            return Organization(
                id=uuid.UUID(int=plan.ids.getrandbits(128), version=4),
                kind=kind,
                slug=draft.slug,
                legal_name=draft.legal_name,
                credit_code=draft.credit_code,
                province=draft.province,
                city=draft.city,
                is_sme=draft.is_sme,
                parent=parent,
            )

        providers = [build(draft, Organization.Kind.PROVIDER) for draft in plan.providers]
        Organization.objects.bulk_create(providers, batch_size=BATCH_SIZE)
        self.stdout.write(f"providers {len(providers):,}/{plan.n_providers:,}")
        buyers = [
            build(draft, Organization.Kind.BUYER, None if draft.parent is None else providers[draft.parent])
            for draft in plan.buyers
        ]
        for start in range(0, len(buyers), BATCH_SIZE):
            Organization.objects.bulk_create(buyers[start : start + BATCH_SIZE])
            done = min(start + BATCH_SIZE, len(buyers))
            self.stdout.write(f"buyers {done:,}/{plan.n_buyers:,}")
        Organization.objects.bulk_create(
            [build(ISSUER, Organization.Kind.ISSUER), build(OPERATOR, Organization.Kind.OPERATOR)]
        )
        self.stdout.write("issuer 1/1, operator 1/1")
        return providers

    def _write_pools(self, plan: NationalPlan, providers: list[Organization], now: datetime) -> None:
        hubs = {hub.code: hub for hub in Hub.objects.all()}
        gpus = {gpu.code: gpu for gpu in GpuModel.objects.all()}
        bands = {code: hour_bands(hub.tariff) for code, hub in hubs.items()}
        pools, plans, changes, heartbeats = [], [], [], []
        for draft in plan.pools:
            hub, gpu = hubs[draft.hub], gpus[draft.gpu]
            history = [("", Status.PENDING)]
            if draft.status != Status.PENDING:
                history.append((Status.PENDING, Status.ACTIVE))
            if draft.status == Status.SUSPENDED:
                history.append((Status.ACTIVE, Status.SUSPENDED))
            changed_at = [now + timedelta(milliseconds=step) for step in range(len(history))]
            pool = ResourcePool(
                id=uuid.UUID(int=plan.ids.getrandbits(128), version=4),
                provider=providers[draft.provider],
                name=draft.name,
                hub=hub,
                province=draft.province,
                city=draft.city,
                gpu_model=gpu,
                cards=draft.cards,
                pue=draft.pue,
                green_share=draft.green_share,
                interconnect=draft.interconnect,
                status=draft.status,
                status_changed_at=changed_at[-1],
                status_changed_by=BY,
                healthy_cards=draft.cards - draft.unhealthy,
                last_heartbeat_at=now,
            )
            pools.append(pool)
            # The same arithmetic as pools.services._plan_prices with no time_of_use given.
            price = draft.price
            factors = default_factors(tariff=hub.tariff, base_price=price, power_watts=gpu.power_watts, pue=draft.pue)
            prices = hour_prices(base_price=price, factors=factors, bands=bands[draft.hub])
            plans.append(
                PricePlan(
                    pool=pool,
                    version=1,
                    effective_from=now,
                    running_from=now,
                    price_per_card_hour=price,
                    time_of_use={band: str(factor) for band, factor in sorted(factors.items())},
                    hour_prices=[str(hour_price) for hour_price in prices],
                    token_prices=draft.token_prices,
                    created_by=BY,
                )
            )
            for (from_status, to_status), at in zip(history, changed_at, strict=True):
                changes.append(
                    PoolStatusChange(
                        pool=pool, from_status=from_status, to_status=to_status, changed_by=BY, changed_at=at
                    )
                )
            heartbeats.append(Heartbeat(pool=pool, healthy_cards=pool.healthy_cards, observed_at=now))
        ResourcePool.objects.bulk_create(pools, batch_size=BATCH_SIZE)
        self.stdout.write(f"pools {len(pools):,}/{plan.n_pools:,} ({sum(p.cards for p in pools):,} cards)")
        PricePlan.objects.bulk_create(plans, batch_size=BATCH_SIZE)
        self.stdout.write(f"price plans {len(plans):,}/{len(pools):,}")
        PoolStatusChange.objects.bulk_create(changes, batch_size=BATCH_SIZE)
        self.stdout.write(f"status changes {len(changes):,}")
        Heartbeat.objects.bulk_create(heartbeats, batch_size=BATCH_SIZE)
        self.stdout.write(f"heartbeats {len(heartbeats):,}/{len(pools):,}")
        self._write_endpoints(plan, pools, now)

    def _write_endpoints(self, plan: NationalPlan, pools: list[ResourcePool], now: datetime) -> None:
        """A model endpoint for each model a pool prices, on a tenth of its cards in whole servers
        (together at most half the pool), approved (its cards reserved) where the pool is active.
        Derived from the pools alone, so the seed's other figures do not move."""
        endpoints = []
        for draft, pool in zip(plan.pools, pools, strict=True):
            if not draft.token_prices:
                continue
            # At most half the pool for all its endpoints together: the rest stays for card leases.
            most = pool.cards // (2 * len(draft.token_prices))
            cards = min(most, max(SERVER_CARDS, round(pool.cards * ENDPOINT_SHARE / SERVER_CARDS) * SERVER_CARDS))
            if cards < 1:
                continue
            for model in sorted(draft.token_prices):
                speed = CARD_SPEED.get(draft.gpu, CARD_SPEED_OTHER)
                active = pool.status == Status.ACTIVE
                endpoints.append(
                    ModelEndpoint(
                        id=uuid.uuid5(pool.id, model),
                        pool=pool,
                        model=model,
                        throughput_per_card=round(H100_TOKENS_PER_SECOND[model] * speed),
                        cards=cards,
                        status=ModelEndpoint.Status.ACTIVE if active else ModelEndpoint.Status.PENDING,
                        status_changed_at=now,
                        status_changed_by=BY,
                    )
                )
                if active:
                    pool.reserved_cards += cards
        ModelEndpoint.objects.bulk_create(endpoints, batch_size=BATCH_SIZE)
        reserved = [pool for pool in pools if pool.reserved_cards]
        ResourcePool.objects.bulk_update(reserved, ["reserved_cards"], batch_size=BATCH_SIZE)
        invalidate_offer_snapshot(*[pool.pk for pool in pools])  # bulk writes: the offers of every process
        self.stdout.write(f"model endpoints {len(endpoints):,} on {len(reserved):,} pools")

    def _write_price_index_history(self, now: datetime) -> None:
        """The price index's snapshot now, and HISTORY_DAYS of hourly history before it so that its
        charts have a past: the same offers, their prices rising towards today's (prices 90 days
        ago were about 30% lower, as in early 2026) and their free cards following the day (most
        taken in the working hours of Shanghai)."""
        price_index_snapshot(now=now)
        this_hour = now.replace(minute=0, second=0, microsecond=0)
        current = list(PriceIndexSnapshot.objects.filter(hour=this_hour))
        regions = dict(Hub.objects.values_list("code", "region"))
        rows = []
        for hours_ago in range(1, HISTORY_DAYS * 24 + 1):
            hour = this_hour - timedelta(hours=hours_ago)
            trend = Decimal(1) - Decimal("0.3") * Decimal(hours_ago) / Decimal(HISTORY_DAYS * 24)
            local = (hour.hour + 8) % 24
            free = 0.55 + 0.45 * math.cos(2 * math.pi * (local - 3) / 24)  # fewest free at 15:00, most at 03:00
            for snapshot in current:
                offers = {
                    hub: [(_price(price * trend), max(1, round(cards * free))) for price, cards in pairs]
                    for hub, pairs in offers_from_json(snapshot.offers).items()
                }
                rows.append(
                    PriceIndexSnapshot(
                        hour=hour,
                        gpu_model_id=snapshot.gpu_model_id,
                        offers=offers_json(offers),
                        index=snapshot_index(offers, regions),
                        taken_at=now,
                    )
                )
        PriceIndexSnapshot.objects.bulk_create(rows, batch_size=BATCH_SIZE, ignore_conflicts=True)
        self.stdout.write(f"price index history {len(rows):,} snapshots ({HISTORY_DAYS} days x {len(current)} an hour)")

    def _create_keys(self) -> list[str]:
        lines = []
        for kind in (Organization.Kind.BUYER, Organization.Kind.PROVIDER, Organization.Kind.ISSUER):
            organization = Organization.objects.filter(kind=kind, slug__startswith=SLUG_PREFIX).order_by("slug")[0]
            lines.append(self._key_line(organization))
        lines.append(self._key_line(Organization.objects.get(slug=OPERATOR.slug)))
        return lines

    def _key_line(self, organization: Organization) -> str:
        _, raw_key = api_key_create(organization=organization, name="national seed", created_by=BY)
        return f"{organization.kind:<9} {organization.slug:<20} {raw_key}"

    def _summary(self, seconds: float) -> None:
        pools = ResourcePool.objects.filter(provider__slug__startswith=SLUG_PREFIX)
        totals = pools.aggregate(pools=Count("id"), cards=Sum("cards"))
        providers = Organization.objects.filter(kind=Organization.Kind.PROVIDER, slug__startswith=SLUG_PREFIX)
        buyers = Organization.objects.filter(kind=Organization.Kind.BUYER, slug__startswith=SLUG_PREFIX)
        cards = totals["cards"] or 0
        self.stdout.write(
            f"Seeded in {seconds:.1f} s: {providers.count():,} providers, {totals['pools']:,} pools, {cards:,} cards, "
            f"{pools.order_by().values('province').distinct().count()} provinces, {buyers.count():,} buyers "
            f"({buyers.filter(is_sme=True).count():,} SMEs, {buyers.filter(parent__isnull=False).count()} in a "
            "provider's group), 1 issuer, 1 operator."
        )
        by_hub = {hub: (n, c) for hub, n, c in pools.values_list("hub_id").annotate(Count("id"), Sum("cards"))}
        by_gpu = (
            pools.values_list("gpu_model_id").annotate(n=Count("id"), c=Sum("cards")).order_by("-c", "gpu_model_id")
        )
        rows = [("Cards by hub:", f"{hub['code']} ({hub['region']})", *by_hub.get(hub["code"], (0, 0))) for hub in HUBS]
        rows += [("Cards by GPU model:", gpu, n, c) for gpu, n, c in by_gpu]
        for k, (title, label, n, c) in enumerate(rows):
            if k == 0 or title != rows[k - 1][0]:
                self.stdout.write(title)
            self.stdout.write(f"  {label:<22} {n:>5} pools {c:>9,} cards {100 * c / max(cards, 1):5.1f}%")
