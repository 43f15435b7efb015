"""All money: prices and estimates (:mod:`.prices`), a batch's budget check (:mod:`.budget`), the
fleet's spend limit (:mod:`.spend`) and the cost ledger of a run (:mod:`.ledger`)."""

from prefect_cometapi.billing.prices import DEFAULT_PRICES, ModelPrice, estimate_cost
from prefect_cometapi.billing.spend import create_spend_limit

__all__ = ["DEFAULT_PRICES", "ModelPrice", "create_spend_limit", "estimate_cost"]
