"""Natural-language item text for the built-in synthetic catalogue.

Every latent attribute value has several surface forms (synonyms) and every sentence several templates,
so a sentence encoder can recover the attributes while exact string matching on one canonical word
cannot. Some attributes are deliberately left out of the text for a share of items (colour and material
are then only visible in the image), and noise sentences carry no signal.
"""

from __future__ import annotations

import numpy as np

ATTRIBUTE_NAMES: tuple[str, ...] = ("category", "colour", "material", "style", "price_band")

CATEGORIES: dict[str, list[str]] = {
    "backpack": ["backpack", "rucksack", "daypack", "school bag", "hiking pack"],
    "sneakers": ["sneakers", "trainers", "running shoes", "athletic shoes", "kicks"],
    "jacket": ["jacket", "coat", "windbreaker", "parka", "outerwear jacket"],
    "t-shirt": ["t-shirt", "tee", "crew-neck top", "short-sleeve shirt", "graphic tee"],
    "hat": ["hat", "cap", "beanie", "bucket hat", "baseball cap"],
    "watch": ["watch", "wristwatch", "timepiece", "chronograph", "analog watch"],
    "mug": ["mug", "coffee cup", "tea mug", "travel tumbler", "coffee mug"],
    "lamp": ["lamp", "desk light", "table lamp", "reading light", "bedside lamp"],
}
# The `category` field only names a coarse department, as real catalogues often do.
DEPARTMENTS: dict[str, str] = {
    "backpack": "Bags & Accessories", "hat": "Bags & Accessories", "watch": "Bags & Accessories",
    "sneakers": "Clothing & Shoes", "jacket": "Clothing & Shoes", "t-shirt": "Clothing & Shoes",
    "mug": "Home & Kitchen", "lamp": "Home & Kitchen",
}
USES: dict[str, list[str]] = {
    "backpack": ["commuting", "weekend hikes", "carrying a laptop", "school days"],
    "sneakers": ["running", "everyday wear", "the gym", "long walks"],
    "jacket": ["chilly evenings", "rainy days", "layering", "city commutes"],
    "t-shirt": ["casual days", "layering", "workouts", "lounging"],
    "hat": ["sunny days", "cold mornings", "festivals", "outdoor trips"],
    "watch": ["the office", "daily wear", "special occasions", "training sessions"],
    "mug": ["morning coffee", "tea breaks", "the office", "hot chocolate"],
    "lamp": ["late-night reading", "a home office", "the bedroom", "cosy evenings"],
}
COLOURS: dict[str, list[str]] = {
    "red": ["red", "crimson", "scarlet", "cherry red", "ruby"],
    "blue": ["blue", "navy", "cobalt", "azure", "royal blue"],
    "green": ["green", "emerald", "olive", "forest green", "sage"],
    "yellow": ["yellow", "mustard", "lemon", "golden yellow", "canary"],
    "black": ["black", "jet black", "charcoal", "onyx", "ebony"],
    "white": ["white", "ivory", "snow white", "cream", "off-white"],
    "purple": ["purple", "violet", "lavender", "plum", "lilac"],
    "orange": ["orange", "tangerine", "burnt orange", "amber", "apricot"],
}
MATERIALS: dict[str, list[str]] = {
    "leather": ["leather", "full-grain leather", "faux leather", "suede"],
    "cotton": ["cotton", "organic cotton", "soft cotton", "jersey cotton"],
    "wool": ["wool", "merino wool", "chunky knit", "fleece"],
    "denim": ["denim", "canvas", "twill", "chambray"],
    "metal": ["metal", "stainless steel", "aluminium", "brushed steel"],
    "plastic": ["plastic", "recycled plastic", "polymer", "resin"],
}
STYLES: dict[str, list[str]] = {
    "classic": ["classic", "timeless", "traditional", "heritage"],
    "sporty": ["sporty", "athletic", "performance", "active"],
    "minimalist": ["minimalist", "clean-lined", "simple", "understated"],
    "vintage": ["vintage", "retro", "old-school", "throwback"],
    "bohemian": ["bohemian", "boho", "free-spirited", "eclectic"],
}
PRICE_BANDS: dict[str, list[str]] = {
    "budget": ["affordable", "budget-friendly", "inexpensive", "great-value"],
    "mid": ["mid-range", "reasonably priced", "everyday-priced", "fairly priced"],
    "premium": ["premium", "high-end", "top-quality", "upscale"],
    "luxury": ["luxury", "designer", "exclusive", "deluxe"],
}
PRICE_RANGES: tuple[tuple[float, float], ...] = ((5.0, 25.0), (25.0, 70.0), (70.0, 180.0), (180.0, 600.0))

ATTRIBUTE_VALUES: dict[str, list[str]] = {
    "category": list(CATEGORIES), "colour": list(COLOURS), "material": list(MATERIALS),
    "style": list(STYLES), "price_band": list(PRICE_BANDS),
}
_SYNONYMS = (CATEGORIES, COLOURS, MATERIALS, STYLES, PRICE_BANDS)

BRANDS: tuple[str, ...] = (
    "Northwind", "Altura", "Kestrel & Co", "Lumen", "Fernhill", "Solace", "Brightline", "Oakmere",
    "Vireo", "Tundra Works", "Marlow", "Halcyon", "Pebblestone", "Juniper Lane", "Quarry", "Wren",
    "Atlas Supply", "Nimbus", "Corvid", "Meridian",
)
_MODEL_NAMES = (
    "Aurora", "Drift", "Summit", "Echo", "Harbor", "Pioneer", "Cascade", "Zenith", "Voyager", "Ember",
    "Tidal", "Orbit", "Prairie", "Compass", "Lantern", "Horizon",
)
_NOISE = (
    "Free returns within 30 days.", "Ships in 2-3 business days.", "Customers love it.", "Limited stock.",
    "A great gift idea.", "Designed in Lisbon.", "Backed by a two-year warranty.", "Packaging is recyclable.",
    "Part of the {season} collection.", "Rated {rating} out of 5 by reviewers.", "Item no. {sku}.",
    "Easy to care for.", "Fits most people.", "Check the size guide before ordering.",
)
_SEASONS = ("spring", "summer", "autumn", "winter", "holiday", "anniversary")

_TITLES = (
    "{brand} {style} {colour} {category}",
    "{colour} {material} {category} by {brand}",
    "{brand} {category} - {colour}, {material}",
    "The {style} {category} in {colour}",
    "{material} {category} ({colour}) | {brand}",
    "{brand} {model} {category}",
    "{model} {style} {category}",
    "{brand} {model} {material} {category}",
)
_STYLE_SENTENCES = (
    "{A_style} {category} made for {use}.", "This {category} brings {style} flair to {use}.",
    "{Style} design, ideal for {use}.", "Our {style} take on the {category}.",
)
_COLOUR_SENTENCES = (
    "Finished in {colour}.", "Comes in a rich {colour} tone.", "Colour: {colour}.",
    "The {colour} shade pairs with almost anything.", "Available here in {colour}.",
)
_MATERIAL_SENTENCES = (
    "Made from {material}.", "Crafted in {material} for durability.", "{Material} construction.",
    "Built with {material} throughout.",
)
_PRICE_SENTENCES = (
    "{A_price_word} pick at ${price:.2f}.", "Priced at ${price:.2f}.", "{Price_word} and built to last.",
    "{A_price_word} choice.",
)


def synonyms(attribute: str, value: int) -> list[str]:
    """All surface forms of one attribute value, e.g. synonyms("colour", 0) -> ["red", "crimson", ...]."""
    table = _SYNONYMS[ATTRIBUTE_NAMES.index(attribute)]
    return list(table[list(table)[value]])


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def render_item_text(
    attrs: np.ndarray, brand: int, price: float, rng: np.random.Generator, *,
    p_colour: float = 0.85, p_material: float = 0.7,
) -> dict[str, str]:
    """Title, description, department and brand of one item with attributes `attrs` [5] (see ATTRIBUTE_NAMES).

    Colour is mentioned with probability `p_colour` and material with `p_material`; the category and
    style always are (in the title or the description). Price always appears in the description.
    """
    cat, col, mat, sty, band = (int(a) for a in attrs)
    cat_name = list(CATEGORIES)[cat]
    words = {
        "category": _pick(rng, CATEGORIES[cat_name]),
        "colour": _pick(rng, COLOURS[list(COLOURS)[col]]),
        "material": _pick(rng, MATERIALS[list(MATERIALS)[mat]]),
        "style": _pick(rng, STYLES[list(STYLES)[sty]]),
        "price_word": _pick(rng, PRICE_BANDS[list(PRICE_BANDS)[band]]),
        "brand": BRANDS[brand],
        "model": _pick(rng, _MODEL_NAMES),
        "use": _pick(rng, USES[cat_name]),
    }
    say_colour = bool(rng.random() < p_colour)
    say_material = bool(rng.random() < p_material)
    # Only titles that mention nothing the item should hide are eligible.
    titles = [t for t in _TITLES
              if (say_colour or "{colour}" not in t) and (say_material or "{material}" not in t)]
    template = _pick(rng, titles)
    title = template.format(**words)
    fmt = {**words, "Style": _cap(words["style"]), "Material": _cap(words["material"]),
           "Price_word": _cap(words["price_word"]), "price": price,
           "A_style": f"{_cap(_article(words['style']))} {words['style']}",
           "A_price_word": f"{_cap(_article(words['price_word']))} {words['price_word']}"}
    sentences = [_pick(rng, _STYLE_SENTENCES).format(**fmt)]
    if say_colour and ("{colour}" not in template or rng.random() < 0.5):
        sentences.append(_pick(rng, _COLOUR_SENTENCES).format(**fmt))
    if say_material and ("{material}" not in template or rng.random() < 0.5):
        sentences.append(_pick(rng, _MATERIAL_SENTENCES).format(**fmt))
    sentences.append(_pick(rng, _PRICE_SENTENCES).format(**fmt))
    n_noise = int(rng.integers(1, 3))
    for j in rng.choice(len(_NOISE), size=n_noise, replace=False):
        sentences.append(_NOISE[int(j)].format(
            season=_pick(rng, _SEASONS), rating=f"{rng.uniform(3.5, 5.0):.1f}",
            sku=int(rng.integers(10000, 99999)),
        ))
    # Keep the leading sentence, shuffle the rest so position carries no signal.
    rest = sentences[1:]
    order = rng.permutation(len(rest))
    description = " ".join([sentences[0]] + [rest[int(i)] for i in order])
    return {"title": title, "description": description, "category": DEPARTMENTS[cat_name],
            "brand": BRANDS[brand]}
