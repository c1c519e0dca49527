"""A plugin declaring a gift for a brand it never declared."""

from app import SponsoredGift, hookimpl


@hookimpl
def register_sponsored_gifts():
    return [SponsoredGift(sku="stray", name="Stray", brand="nobody", coin_price=5,
                          image_url="https://cdn.example.com/stray.webp")]
