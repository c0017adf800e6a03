"""The procedural city table: invented single-word cities in real countries, with continent and language.

MIB's RAVEL asks a pretrained LM about 3,122 real cities (``ravel_city_entity.json``). No pretrained LM
exists here, so the table is generated: :data:`COUNTRIES` lists real countries whose name, language and
continent are single words, and every country gets :data:`CITIES_PER_COUNTRY` invented city names. A
city's continent and language are its country's, so the three attributes are consistent across the cities
of one country, as in the real world; languages are shared by several countries (Spanish, Arabic,
English ...) so ``Language`` is not a relabelling of ``Country``. ``Continent`` uses five single-word
continents (the Americas are one, "America"): MIB's "North America"/"South America" would be two tokens.

City names are built from syllables by a fixed-seed generator, so the table is the same on every machine
and Python version; :func:`city_table` checks that every name is unique, purely alphabetic (one word for
any whitespace/word tokenizer) and distinct from every country, language and continent.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

ATTRIBUTES = ("Continent", "Country", "Language")

#: country -> (continent, language); every value is one alphabetic word.
COUNTRIES: dict[str, tuple[str, str]] = {
    # Europe
    "France": ("Europe", "French"), "Spain": ("Europe", "Spanish"), "Germany": ("Europe", "German"),
    "Austria": ("Europe", "German"), "Italy": ("Europe", "Italian"), "Portugal": ("Europe", "Portuguese"),
    "Poland": ("Europe", "Polish"), "Sweden": ("Europe", "Swedish"), "Greece": ("Europe", "Greek"),
    "Netherlands": ("Europe", "Dutch"), "Belgium": ("Europe", "French"), "Ireland": ("Europe", "English"),
    "Norway": ("Europe", "Norwegian"), "Switzerland": ("Europe", "German"),
    # Asia
    "Japan": ("Asia", "Japanese"), "China": ("Asia", "Chinese"), "India": ("Asia", "Hindi"),
    "Vietnam": ("Asia", "Vietnamese"), "Thailand": ("Asia", "Thai"), "Indonesia": ("Asia", "Indonesian"),
    "Iran": ("Asia", "Persian"), "Turkey": ("Asia", "Turkish"), "Pakistan": ("Asia", "Urdu"),
    "Israel": ("Asia", "Hebrew"), "Iraq": ("Asia", "Arabic"), "Syria": ("Asia", "Arabic"),
    "Philippines": ("Asia", "Filipino"),
    # Africa
    "Egypt": ("Africa", "Arabic"), "Morocco": ("Africa", "Arabic"), "Algeria": ("Africa", "Arabic"),
    "Nigeria": ("Africa", "English"), "Kenya": ("Africa", "Swahili"), "Tanzania": ("Africa", "Swahili"),
    "Ethiopia": ("Africa", "Amharic"), "Senegal": ("Africa", "French"), "Ghana": ("Africa", "English"),
    "Angola": ("Africa", "Portuguese"), "Mozambique": ("Africa", "Portuguese"),
    # America
    "Mexico": ("America", "Spanish"), "Brazil": ("America", "Portuguese"), "Argentina": ("America", "Spanish"),
    "Chile": ("America", "Spanish"), "Peru": ("America", "Spanish"), "Colombia": ("America", "Spanish"),
    "Canada": ("America", "English"), "Cuba": ("America", "Spanish"), "Haiti": ("America", "French"),
    "Jamaica": ("America", "English"),
    # Oceania
    "Australia": ("Oceania", "English"), "Samoa": ("Oceania", "Samoan"), "Tonga": ("Oceania", "Tongan"),
}
CITIES_PER_COUNTRY = 12
_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "k", "kl", "l", "m", "n", "p", "r", "s", "st", "t", "tr", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ei", "ou")
_CODAS = ("", "", "n", "r", "l", "s", "k", "m")
_SEED = "mibench-ravel-cities-v1"


@dataclass(frozen=True)
class City:
    name: str
    Continent: str
    Country: str
    Language: str

    def attribute(self, name: str) -> str:
        if name not in ATTRIBUTES:
            raise KeyError(f"unknown RAVEL attribute {name!r} (attributes: {', '.join(ATTRIBUTES)})")
        return str(getattr(self, name))


def _name(rng: random.Random) -> str:
    syllables = rng.choice((2, 2, 3))
    text = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)) + rng.choice(_CODAS)
    return text.capitalize()


@lru_cache(maxsize=1)
def city_table() -> dict[str, City]:
    """Every city by name, in a fixed order (country by country); built once, checked on build."""
    rng = random.Random(_SEED)
    reserved = set(COUNTRIES) | {v for pair in COUNTRIES.values() for v in pair}
    cities: dict[str, City] = {}
    for country, (continent, language) in COUNTRIES.items():
        made = 0
        while made < CITIES_PER_COUNTRY:
            name = _name(rng)
            if name in cities or name in reserved or not name.isalpha():
                continue
            cities[name] = City(name, continent, country, language)
            made += 1
    return cities


def attribute_values(attribute: str) -> list[str]:
    """The distinct values of one attribute, sorted."""
    return sorted({city.attribute(attribute) for city in city_table().values()})
