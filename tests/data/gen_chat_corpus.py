#!/usr/bin/env python3
"""Writes tests/data/chat_corpus.jsonl: synthetic, labelled chat messages.

Deterministic (fixed seed, stdlib only, Python 3.11). Each line is
    {"text": ..., "lang": "ru"|"en", "role": "customer"|"operator",
     "pii": [{"kind": ..., "start": B, "end": B, "value": ...}]}
with UTF-8 BYTE offsets, so `&text[start..end]` in Rust is the value.

The values follow ../../../shared/PII-RULES.md: every checksum is valid, and
each kind is written in the layouts people use in chats. Look-alikes that
are NOT PII are mixed in on purpose and are not labelled: order ids
(some Luhn-valid and grouped like cards), tracking numbers, amounts, dates,
times, invoice numbers, Luhn-invalid 16-digit numbers, phone-shaped product
codes, BIKs and KPPs, checksum-valid numbers without any context word,
and URLs whose host looks like a piece of an email (`john.do`).

Labelling conventions (what a span covers):
- the value only, never its context word (`ИНН 7707083893` -> the digits);
- `серия 4506 номер 123456` -> `4506 номер 123456` (series through number);
- a phone with an extension (`доб. 123`, `ext. 12`) -> the phone without it,
  but an extension glued to it (`+1-903-140-4508x769`) is part of it;
- a BIK written right before its account (`044525225/40702810...`) -> both,
  since that is one `ru_bank_account` value; a BIK elsewhere is not labelled.
After the N_MESSAGES messages come N_HARD ones from a second seed (so the
first ones stay as they were): cards of every network and length after a
card word (JCB, Diners 14, Visa 13, Maestro 12, UnionPay 19), phones in
national layouts without a country code after a phone word, and their
look-alikes after the same words: order and invoice numbers, dates,
amounts, tracking codes, Luhn-valid numbers of no known network with no
card word.

Run: python3 tests/data/gen_chat_corpus.py  (from the repository root)
"""
import json
import os
import random

SEED = 20251002
N_MESSAGES = 2400
HARD_SEED = 20261207
N_HARD = 400
NBSP = "\u00a0"
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chat_corpus.jsonl")

rnd = random.Random(SEED)


def digits(n):
    return "".join(str(rnd.randrange(10)) for _ in range(n))


def pick(seq):
    return seq[rnd.randrange(len(seq))]


# --- checksums (PII-RULES.md) -------------------------------------------

def luhn_ok(s):
    total = 0
    for i, ch in enumerate(reversed(s)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def luhn_complete(prefix):
    for c in "0123456789":
        if luhn_ok(prefix + c):
            return prefix + c
    raise AssertionError


def snils_control(num9):
    s = sum(int(d) * w for d, w in zip(num9, range(9, 0, -1)))
    return s % 101 % 100


def inn10():
    d = digits(9)
    w = [2, 4, 10, 3, 5, 9, 4, 6, 8]
    return d + str(sum(int(a) * b for a, b in zip(d, w)) % 11 % 10)


def inn12():
    d = digits(10)
    w1 = [7, 2, 4, 10, 3, 5, 9, 4, 6, 8]
    d += str(sum(int(a) * b for a, b in zip(d, w1)) % 11 % 10)
    w2 = [3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8]
    return d + str(sum(int(a) * b for a, b in zip(d, w2)) % 11 % 10)


def inn_ok(s):
    if len(s) == 10:
        w = [2, 4, 10, 3, 5, 9, 4, 6, 8]
        return sum(int(a) * b for a, b in zip(s, w)) % 11 % 10 == int(s[9])
    if len(s) == 12:
        w1 = [7, 2, 4, 10, 3, 5, 9, 4, 6, 8]
        w2 = [3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8]
        return (sum(int(a) * b for a, b in zip(s, w1)) % 11 % 10 == int(s[10])
                and sum(int(a) * b for a, b in zip(s, w2)) % 11 % 10 == int(s[11]))
    return False


def ogrn13():
    d = pick("15") + digits(11)
    return d + str(int(d) % 11 % 10)


def ogrnip15():
    d = "3" + digits(13)
    return d + str(int(d) % 13 % 10)


def bik():
    # 04 + region (2) + division (2) + bank code 050..999 (not a cash centre)
    return "04" + digits(4) + str(rnd.randrange(50, 1000)).zfill(3)


def account_for(bik_digits, prefix8):
    """A 20-digit account whose key digit (the 9th) passes against the BIK."""
    rest = digits(11)
    for k in "0123456789":
        acc = prefix8 + k + rest
        x = bik_digits[6:9] + acc
        if sum(int(d) * w % 10 for d, w in zip(x, [7, 1, 3] * 8)) % 10 == 0:
            return acc
    raise AssertionError


def iban_make(country, bban):
    conv = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(conv) % 97
    return f"{country}{check:02d}{bban}"


def iban_ok(s):
    s = s.replace(" ", "")
    conv = "".join(str(int(c, 36)) for c in s[4:] + s[:4])
    return int(conv) % 97 == 1


UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def letters(n):
    return "".join(pick(UPPER) for _ in range(n))


# --- PII values in chat layouts ------------------------------------------

def group(s, sizes, sep):
    out, i = [], 0
    for n in sizes:
        out.append(s[i:i + n])
        i += n
    if i < len(s):
        out.append(s[i:])
    return sep.join(out)


def card():
    brand = pick(["visa", "visa", "mc", "mc2", "mir", "mir19", "maestro", "unionpay", "amex", "diners"])
    if brand == "visa":
        num = luhn_complete("4" + digits(14))
    elif brand == "mc":
        num = luhn_complete(str(rnd.randrange(51, 56)) + digits(13))
    elif brand == "mc2":
        num = luhn_complete(str(rnd.randrange(2221, 2721)) + digits(11))
    elif brand == "mir":
        num = luhn_complete(str(rnd.randrange(2200, 2205)) + digits(11))
    elif brand == "mir19":
        num = luhn_complete(str(rnd.randrange(2200, 2205)) + digits(14))
    elif brand == "maestro":
        num = luhn_complete(pick(["50", "56", "57", "58", "63", "67"]) + digits(13))
    elif brand == "unionpay":
        num = luhn_complete("62" + digits(13))
    elif brand == "amex":
        num = luhn_complete(pick(["34", "37"]) + digits(12))
        return pick([num, group(num, [4, 6], " "), group(num, [4, 6], "-")])
    else:
        num = luhn_complete("36" + digits(11))
        return pick([num, group(num, [4, 6], " "), group(num, [4, 6], "-")])
    sep = pick(["", " ", " ", "-", NBSP])
    return num if sep == "" else group(num, [4, 4, 4, 4], sep)


RU_AREAS = ["916", "903", "925", "999", "985", "961", "495", "499", "812", "343", "800", "383", "917", "950"]


def phone_ru():
    area = pick(RU_AREAS)
    sub = digits(7)
    a, b, c = sub[:3], sub[3:5], sub[5:]
    form = rnd.randrange(9)
    return [
        f"+7 ({area}) {a}-{b}-{c}",
        f"8 ({area}) {a}-{b}-{c}",
        f"8 {area} {a} {b} {c}",
        f"8-{area}-{a}-{b}-{c}",
        f"8{area}{sub}",
        f"+7{area}{sub}",
        f"+7 {area} {a}-{b}-{c}",
        f"+7 {area} {a}-{b}{c}",
        f"+7({area}){sub}",
    ][form]


def phone_intl():
    form = rnd.randrange(10)
    if form == 0:
        return f"+1 ({rnd.randrange(201, 990)}) {rnd.randrange(200, 999)}-{digits(4)}"
    if form == 1:
        return f"+1-{rnd.randrange(201, 990)}-{rnd.randrange(200, 999)}-{digits(4)}"
    if form == 2:
        return f"+44 20 {digits(4)} {digits(4)}"
    if form == 3:
        return f"+44 7{digits(3)} {digits(6)}"
    if form == 4:
        return f"+49 30 {digits(8)}"
    if form == 5:
        return f"+33 {rnd.randrange(1, 8)} {digits(2)} {digits(2)} {digits(2)} {digits(2)}"
    if form == 6:
        return f"+380 {pick(['44', '67', '50', '93'])} {digits(3)} {digits(4)}"
    if form == 7:
        return f"+375 {pick(['29', '33', '44'])} {digits(3)}-{digits(2)}-{digits(2)}"
    if form == 8:
        return f"+998 {pick(['90', '91', '93'])} {digits(3)} {digits(2)} {digits(2)}"
    return f"+{pick(['49', '34', '39', '31', '48'])}{rnd.randrange(1, 10)}{digits(8)}"


LAT_FIRST = ["ivan", "anna", "john", "maria", "alex", "olga", "peter", "kate", "sergey", "dmitry", "elena", "mike"]
LAT_LAST = ["petrov", "smith", "ivanova", "sidorov", "brown", "kuznetsov", "lee", "volkova", "novak"]
CYR_LOCAL = ["иван", "мария", "пётр.иванов", "анна-к", "ольга_смирнова", "дмитрий.п", "заказчик", "директор"]
DOMAINS = ["mail.ru", "yandex.ru", "gmail.com", "outlook.com", "bk.ru", "inbox.ru", "company.com",
           "corp-mail.co.uk", "mail.example.org", "rambler.ru", "proton.me", "tinkoff.ru"]
CYR_DOMAINS = ["почта.рф", "пример.рф", "компания.рус", "магазин.онлайн", "мир.рф", "домен.москва"]


def email():
    if rnd.random() < 0.25:
        local = pick(CYR_LOCAL)
        domain = pick(CYR_DOMAINS + DOMAINS[:2])
    else:
        style = rnd.randrange(5)
        f, l = pick(LAT_FIRST), pick(LAT_LAST)
        local = [f"{f}.{l}", f"{f}{rnd.randrange(70, 100)}", f"{f[0]}.{l}", f"{f}_{l}+shop", f"{l}-{f}"][style]
        if rnd.random() < 0.3:
            local = local.capitalize()
        domain = pick(DOMAINS + CYR_DOMAINS[:1])
    return f"{local}@{domain}"


def iban():
    country = pick(["DE", "GB", "FR", "NL", "RU", "ES", "IT", "CH", "KZ", "BE"])
    bban = {
        "DE": lambda: digits(18),
        "GB": lambda: letters(4) + digits(14),
        "FR": lambda: digits(23),
        "NL": lambda: letters(4) + digits(10),
        "RU": lambda: "04" + digits(27),
        "ES": lambda: digits(20),
        "IT": lambda: letters(1) + digits(22),
        "CH": lambda: digits(17),
        "KZ": lambda: digits(3) + digits(13),
        "BE": lambda: digits(12),
    }[country]()
    value = iban_make(country, bban)
    assert iban_ok(value)
    if rnd.random() < 0.5:
        value = " ".join(value[i:i + 4] for i in range(0, len(value), 4))
    return value


def passport_digits():
    return f"{rnd.randrange(1, 99):02d}{pick(['97', '98', '99', '00', '03', '05', '07', '10', '12', '14', '15', '17', '19', '20', '21', '23'])}", digits(6)


def snils():
    while True:
        num = digits(9)
        if int(num) > 1001998:
            break
    c = f"{snils_control(num):02d}"
    return num, c


def ssn():
    while True:
        area = rnd.randrange(1, 900)
        if area != 666:
            break
    return f"{area:03d}", f"{rnd.randrange(1, 100):02d}", f"{rnd.randrange(1, 10000):04d}"


ACCOUNT_PREFIXES = ["40817810", "40702810", "40802810", "40701810", "42301810", "40817840", "40702978"]


# --- message building -----------------------------------------------------

class Msg:
    def __init__(self, lang, role):
        self.lang, self.role = lang, role
        self.parts, self.pii, self.nbytes = [], [], 0

    def t(self, s):
        self.parts.append(s)
        self.nbytes += len(s.encode())

    def p(self, kind, value):
        start = self.nbytes
        self.t(value)
        self.pii.append({"kind": kind, "start": start, "end": self.nbytes, "value": value})

    def out(self):
        text = "".join(self.parts)
        b = text.encode()
        for item in self.pii:
            assert b[item["start"]:item["end"]].decode() == item["value"]
        return {"text": text, "lang": self.lang, "role": self.role, "pii": self.pii}


# Each PII sentence: (kind, function(msg)). Russian first, then English.

def s_card_ru(m):
    m.t(pick(["Номер карты ", "Моя карта: ", "карта ", "Переведите на карту ", "Списали с карты ", "оплатил картой ",
              "Карта Мир ", "номер карты (", "", "по заказу 123 списали с карты "]))
    m.p("card", card())
    m.t(pick([", срок до 12/27", ".", " — проверьте, пожалуйста", "", " на имя Ивана П.", "; CVC не дам",
              f" {rnd.randrange(1, 13):02d}/{rnd.randrange(25, 31)}", f" {rnd.randrange(1, 13):02d}/{rnd.randrange(25, 31)} {digits(3)}", ")"]))


def s_card_en(m):
    m.t(pick(["My card number is ", "card: ", "Please refund to ", "I paid with ", "Card "]))
    m.p("card", card())
    m.t(pick([" exp 11/26.", ".", ", thanks", "", " (Visa)"]))


def s_phone_ru(m):
    m.t(pick(["Мой телефон ", "Позвоните мне: ", "тел. ", "Номер для связи ", "Перезвоните на ", "мобильный ", "Можно по номеру "]))
    m.p("phone", phone_ru() if rnd.random() < 0.75 else phone_intl())
    r = rnd.random()
    if r < 0.1:
        m.t(f" доб. {rnd.randrange(10, 999)}")
    elif r < 0.2:
        m.t(f" после {rnd.randrange(10, 19)}:00")
    elif r < 0.3:
        m.t(f" {rnd.randrange(1, 29):02d}.{rnd.randrange(1, 13):02d}.2025 с {rnd.randrange(9, 12)}:00")
    m.t(pick([".", "", ", спасибо", " (Ольга)", ", это WhatsApp"]))


def s_phone_en(m):
    m.t(pick(["Call me at ", "my phone: ", "tel ", "You can reach me on ", "Mobile "]))
    m.p("phone", phone_intl() if rnd.random() < 0.7 else phone_ru())
    if rnd.random() < 0.1:
        m.t(f" ext. {rnd.randrange(10, 999)}")
    m.t(pick([".", "", " after 6pm", ", thanks"]))


def s_email_ru(m):
    m.t(pick(["Почта: ", "пишите на ", "Мой e-mail ", "отправьте чек на ", "адрес ", "email - "]))
    m.p("email", email())
    m.t(pick([".", "", ", спасибо", " (рабочая)", "!"]))


def s_email_en(m):
    m.t(pick(["Email me at ", "my email is ", "contact: ", "send the receipt to ", "<"]))
    m.p("email", email())
    m.t(pick([".", "", " please", ">", ", thx"]))


def s_iban(m):
    if m.lang == "ru":
        m.t(pick(["IBAN для перевода: ", "Мой IBAN ", "реквизиты (IBAN): ", "счёт IBAN "]))
    else:
        m.t(pick(["IBAN: ", "please wire to ", "my IBAN is ", "account (IBAN) "]))
    m.p("iban", iban())
    m.t(pick([".", "", ", BIC DEUTDEFF", " — thanks"]))


def s_passport(m):
    series, number = passport_digits()
    form = rnd.randrange(8)
    if m.lang == "en":
        m.t(pick(["passport ", "Passport no. ", "my passport: "]))
        m.p("ru_passport", pick([f"{series} {number}", f"{series}{number}", f"{series[:2]} {series[2:]} {number}"]))
    elif form == 0:
        m.t("серия ")
        m.p("ru_passport", f"{series} номер {number}")
    elif form == 1:
        m.t(pick(["паспорт ", "Паспорт: ", "паспорт РФ "]))
        m.p("ru_passport", f"{series} {number}")
    elif form == 2:
        m.t(pick(["паспорт ", "данные паспорта: "]))
        m.p("ru_passport", f"{series[:2]} {series[2:]} {number}")
    elif form == 3:
        m.t(pick(["серия и номер паспорта ", "паспорт "]))
        m.p("ru_passport", f"{series}-{number}")
    elif form == 4:
        m.t("паспорт ")
        m.p("ru_passport", f"{series} № {number}")
    elif form == 5:
        m.t(pick(["паспорт ", "Паспорт "]))
        m.p("ru_passport", f"{series}{number}")
    elif form == 6:
        m.t("№ ")
        m.p("ru_passport", f"{series} {number}")
        m.t(" (паспорт)")
        return
    else:
        m.t("Серия ")
        m.p("ru_passport", f"{series} номер {number}")
    m.t(pick([f", выдан {rnd.randrange(1, 28):02d}.{rnd.randrange(1, 13):02d}.20{rnd.randrange(5, 24):02d}", ".", "", " ОВД Тверского р-на"]))


def s_snils(m):
    num, c = snils()
    if rnd.random() < 0.6:
        value = f"{num[:3]}-{num[3:6]}-{num[6:]} {c}"
        m.t(pick(["СНИЛС ", "снилс: ", "Мой СНИЛС ", "страховой номер ", "", "SNILS "]) if m.lang == "ru" else pick(["SNILS ", "snils: ", ""]))
    else:
        value = num + c
        m.t(pick(["СНИЛС ", "снилс: ", "Мой СНИЛС "]) if m.lang == "ru" else pick(["SNILS ", "SNILS no. "]))
    m.p("ru_snils", value)
    m.t(pick([".", "", ", проверьте"]))


def s_inn(m):
    value = inn10() if rnd.random() < 0.5 else inn12()
    if m.lang == "ru":
        m.t(pick(["ИНН ", "ИНН: ", "мой ИНН ", "ИНН организации ", "инн ", "ИНН/КПП "]))
    else:
        m.t(pick(["INN ", "INN: ", "tax id (INN) "]))
    m.p("ru_inn", value)
    if m.parts[-2].startswith("ИНН/КПП"):
        m.t(f"/{digits(4)}01001")
    m.t(pick([".", "", ", КПП 770101001" if m.lang == "ru" else ""]))


def s_ogrn(m):
    value = ogrn13() if rnd.random() < 0.6 else ogrnip15()
    word = "ОГРН " if len(value) == 13 else pick(["ОГРНИП ", "ОГРН ИП "])
    m.t(word if m.lang == "ru" else pick(["OGRN ", "OGRN: "]))
    m.p("ru_ogrn", value)
    m.t(pick([".", "", f" от {rnd.randrange(1, 28):02d}.0{rnd.randrange(1, 10)}.2019"]))


def s_bank(m):
    b = bik()
    acc = account_for(b, pick(ACCOUNT_PREFIXES))
    if rnd.random() < 0.3:
        acc_text = group(acc, [5, 3, 1, 4], " ") if rnd.random() < 0.3 else acc
    else:
        acc_text = acc
    form = rnd.randrange(6)
    if m.lang == "en":
        m.t(pick(["account ", "Account number ", "bank account: "]))
        m.p("ru_bank_account", acc_text)
        if rnd.random() < 0.5:
            m.t(f", BIK {b}")
    elif form == 0:
        m.t(f"БИК {b}, р/с ")
        m.p("ru_bank_account", acc_text)
    elif form == 1:
        m.t(pick(["р/с ", "Расчётный счёт ", "счёт ", "счет получателя "]))
        m.p("ru_bank_account", acc_text)
        m.t(f" в ПАО Банк, БИК {b}")
    elif form == 2:
        m.t(pick(["р/с ", "расчетный счет: ", "Счёт "]))
        m.p("ru_bank_account", acc_text)
    elif form == 3:
        m.t("реквизиты: ")
        m.p("ru_bank_account", f"{b}{pick([' ', '/', ':'])}{acc}")
    elif form == 4:
        m.t(f"Банк получателя: БИК {b}\nСчёт: ")
        m.p("ru_bank_account", acc_text)
    else:
        m.t(pick(["переведите на счёт ", "номер счета "]))
        m.p("ru_bank_account", acc_text)
    m.t(pick([".", "", ", получатель ООО «Ромашка»"]))


def s_ssn(m):
    a, g, s = ssn()
    if rnd.random() < 0.7:
        m.t(pick(["SSN ", "my SSN is ", "Social Security number: ", "ssn: ", ""]))
        m.p("us_ssn", f"{a}-{g}-{s}")
    else:
        m.t(pick(["SSN ", "social security number ", "SSN: "]))
        m.p("us_ssn", f"{a}{g}{s}")
    m.t(pick([".", "", ", thanks", " (for the W-9)"]))


PII_RU = [s_card_ru, s_phone_ru, s_email_ru, s_iban, s_passport, s_snils, s_inn, s_ogrn, s_bank]
PII_EN = [s_card_en, s_phone_en, s_email_en, s_iban, s_ssn, s_passport, s_bank, s_inn, s_ogrn, s_snils]
# English chats rarely carry Russian kinds: weight them down.
PII_EN_W = [4, 4, 4, 2, 4, 1, 1, 1, 1, 1]


# --- look-alikes (never labelled) -------------------------------------------

def luhn_invalid16():
    while True:
        n = pick("4523") + digits(15)
        if not luhn_ok(n):
            return n


def look_ru():
    k = rnd.randrange(24)
    d = f"{rnd.randrange(1, 29):02d}.{rnd.randrange(1, 13):02d}.202{rnd.randrange(0, 6)}"
    if k == 0:
        return f"Заказ № {digits(8)} от {d} доставлен."
    if k == 1:
        return f"Номер заказа {luhn_complete('4' + digits(14))}, оплата прошла."
    if k == 2:
        return f"Трек-номер {digits(14)}, отслеживайте на сайте."
    if k == 3:
        return f"трек RA{digits(9)}RU"
    if k == 4:
        return f"Сумма {rnd.randrange(1, 999)} {rnd.randrange(0, 999):03d} руб., списание {d} в {rnd.randrange(0, 24):02d}:{rnd.randrange(0, 60):02d}."
    if k == 5:
        return f"Счёт-фактура № {digits(10)} от {d}"
    if k == 6:
        return f"Код {group(luhn_invalid16(), [4, 4, 4], ' ')} не подходит"
    if k == 7:
        return f"Артикул 8{pick(RU_AREAS)}{digits(7)}, размер M"
    if k == 8:
        return f"Инструкция на сайте https://{pick(LAT_FIRST)}.do/help, или {pick(LAT_FIRST)}.{pick(LAT_LAST)}.do"
    if k == 9:
        return f"БИК банка {bik()}, КПП {digits(4)}01001"
    if k == 10:
        return f"Номер обращения {digits(10)}"
    if k == 11:
        return f"заказ {group(luhn_complete('5' + str(rnd.randrange(1, 6)) + digits(13)), [4, 4, 4], ' ')} оформлен"
    if k == 12:
        return f"Время работы с {rnd.randrange(8, 11)}:00 до {rnd.randrange(17, 22)}:00, {d}"
    if k == 13:
        return f"Договор № {inn10()} от {d}"
    if k == 14:
        return f"Номер отправления {digits(11)}"
    if k == 15:
        return f"Итого 8 {digits(3)} {digits(3)} ₽"
    if k == 16:
        return f"Платёж {digits(20)} обработан"
    if k == 17:
        return f"ссылка https://shop.ru/order/8{pick(RU_AREAS)}{digits(7)}?ref=chat"
    if k == 18:
        return f"Промокод SALE{digits(6)}, скидка 15%"
    if k == 19:
        return f"накладная {digits(4)}-{digits(4)}-{digits(4)}-{digits(4)}"
    if k == 20:
        return f"Код товара {digits(3)}-{digits(2)}-{digits(4)}"
    if k == 21:
        return f"тикет #{digits(9)}"
    if k == 22:
        return f"Штрихкод {pick('46')}{digits(12)}"
    return f"Заявка {ogrn13()} принята {d}"


def snils_bad():
    while True:
        num = digits(9)
        c = rnd.randrange(100)
        if int(num) > 1001998 and c != snils_control(num):
            return f"{num[:3]}-{num[3:6]}-{num[6:]} {c:02d}"


def iban_bad():
    value = iban_make("DE", digits(18))
    check = (int(value[2:4]) + rnd.randrange(1, 90)) % 97
    return f"DE{max(check, 2):02d}{value[4:]}" if not iban_ok(f"DE{max(check, 2):02d}{value[4:]}") else "DE00" + value[4:]


def look_hard():
    """Look-alikes that fail the rules only on their checksum, length or
    range, or are already tokens: the detector must check, not guess."""
    k = rnd.randrange(14)
    if k == 0:
        return f"СНИЛС {snils_bad()} не проходит проверку" if rnd.random() < 0.5 else f"номер {snils_bad()}"
    if k == 1:
        return f"IBAN {iban_bad()} (неверный)" if rnd.random() < 0.5 else f"IBAN {iban_bad()} is wrong"
    if k == 2:
        return f"{pick(['000', '666', '900', '987'])}-{rnd.randrange(1, 100):02d}-{digits(4)} is not a valid SSN"
    if k == 3:
        return f"тел. +7 916 {digits(3)}-{digits(2)}-{digits(1)} (не хватает цифры)"
    if k == 4:
        return f"пишите на {pick(LAT_FIRST)}.{pick(LAT_LAST)}@{pick(DOMAINS)}.invalid"
    if k == 5:
        bad = inn10()
        bad = bad[:9] + str((int(bad[9]) + 1) % 10)
        return f"ИНН {bad} не найден"
    if k == 6:
        o = ogrn13()
        return f"ОГРН {o[:12]}{(int(o[12]) + 1) % 10} — ошибка"
    if k == 7:
        return f"карта {group(luhn_invalid16(), [4, 4, 4], ' ')} отклонена"
    if k == 8:
        return f"{rnd.randrange(1, 29):02d}.{rnd.randrange(1, 13):02d}.2025 {rnd.randrange(0, 24):02d}:{rnd.randrange(0, 60):02d}:{rnd.randrange(0, 60):02d}"
    if k == 9:
        return f"Сумма {rnd.randrange(1, 99)} {digits(3)} {digits(3)},{digits(2)} ₽"
    if k == 10:
        return f"2025-{rnd.randrange(1, 13):02d}-{rnd.randrange(1, 29):02d}T{rnd.randrange(0, 24):02d}:{rnd.randrange(0, 60):02d}"
    if k == 11:
        return f"Номер заказа 8{pick(RU_AREAS)}{digits(7)}"
    if k == 12:
        return f"IP 10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(256)}, порт {rnd.randrange(1024, 65535)}"
    return f"order #{group(luhn_complete('5' + str(rnd.randrange(1, 6)) + digits(13)), [4, 4, 4], '-')}"


def look_en():
    k = rnd.randrange(20)
    d = f"{rnd.randrange(1, 13):02d}/{rnd.randrange(1, 29):02d}/202{rnd.randrange(0, 6)}"
    if k == 0:
        return f"Order #{digits(9)} shipped on {d}."
    if k == 1:
        return f"Your order number is {luhn_complete('4' + digits(14))}."
    if k == 2:
        return f"Tracking number 1Z{digits(3)}{letters(3)}{digits(10)}"
    if k == 3:
        return f"Total: ${rnd.randrange(1, 99)},{digits(3)}.{digits(2)}"
    if k == 4:
        return f"Invoice INV-{rnd.randrange(2019, 2026)}-{digits(6)}"
    if k == 5:
        return f"See https://{pick(LAT_FIRST)}.do/docs or {pick(LAT_FIRST)}.do for help"
    if k == 6:
        return f"ref {group(luhn_invalid16(), [4, 4, 4], '-')}"
    if k == 7:
        return f"Product code 1-{rnd.randrange(200, 999)}-{rnd.randrange(200, 999)}-{digits(4)} is out of stock"
    if k == 8:
        return f"Case {digits(10)} was closed at {rnd.randrange(1, 12)}:{rnd.randrange(0, 60):02d} pm"
    if k == 9:
        return f"Meeting on {d} at {rnd.randrange(10, 18)}:30"
    if k == 10:
        return f"transaction id {digits(16)}"
    if k == 11:
        return f"SKU {digits(3)}-{digits(2)}-{digits(4)}"
    if k == 12:
        return f"order {group(luhn_complete('4' + digits(14)), [4, 4, 4], ' ')} confirmed"
    if k == 13:
        return f"Ticket {digits(12)} escalated"
    if k == 14:
        return f"The amount 1 250 000 was approved on {d}"
    if k == 15:
        return f"git commit {''.join(pick('0123456789abcdef') for _ in range(12))}"
    if k == 16:
        return f"Version 8.{rnd.randrange(1, 20)}.{rnd.randrange(0, 300)} released"
    if k == 17:
        return f"ftp://{pick(LAT_FIRST)}@files.example.com/report.pdf"
    if k == 18:
        return f"Serial number {digits(9)}"
    return f"Item {letters(2)}{digits(9)}"


FILLER_RU_CUSTOMER = ["Здравствуйте!", "Добрый день.", "Не могу оплатить заказ.", "Деньги списались дважды.",
                      "Помогите, пожалуйста.", "Когда придёт возврат?", "Спасибо!", "Это срочно.",
                      "Жду ответа", "Уже третий день жду.", "Вот мои данные:"]
FILLER_RU_OPERATOR = ["Здравствуйте, меня зовут Ольга.", "Уточните, пожалуйста, данные.", "Проверяю информацию.",
                      "Спасибо за ожидание.", "Возврат оформлен.", "Передал в отдел платежей.",
                      "Подскажите, пожалуйста,", "Ваш вопрос решён."]
FILLER_EN_CUSTOMER = ["Hi there!", "I was charged twice.", "Please help.", "Any update?", "Thanks!",
                      "This is urgent.", "Here are my details:", "Can't log in."]
FILLER_EN_OPERATOR = ["Hello, this is Mark from support.", "Could you confirm your details?", "Checking now.",
                      "Thanks for waiting.", "Refund has been issued.", "I've escalated this."]


def message():
    lang = "ru" if rnd.random() < 0.65 else "en"
    role = "customer" if rnd.random() < 0.7 else "operator"
    m = Msg(lang, role)
    filler = {("ru", "customer"): FILLER_RU_CUSTOMER, ("ru", "operator"): FILLER_RU_OPERATOR,
              ("en", "customer"): FILLER_EN_CUSTOMER, ("en", "operator"): FILLER_EN_OPERATOR}[(lang, role)]
    n_pii = pick([0, 1, 1, 1, 2, 2, 3])
    n_look = pick([0, 0, 1, 1, 2])
    pieces = ["pii"] * n_pii + ["look"] * n_look
    rnd.shuffle(pieces)
    if rnd.random() < 0.6:
        m.t(pick(filler))
        first = False
    else:
        first = True
    for piece in pieces:
        if not first:
            m.t(pick([" ", " ", "\n", " ", ". "]) if m.parts and not m.parts[-1].endswith((".", "!", "?", ":")) else " ")
        first = False
        if piece == "pii":
            if lang == "ru":
                pick(PII_RU)(m)
            else:
                rnd.choices(PII_EN, weights=PII_EN_W)[0](m)
        else:
            m.t(look_hard() if rnd.random() < 0.3 else look_ru() if lang == "ru" else look_en())
    if not pieces:
        m.t(" " + pick(filler))
    return m.out()


# --- hard cases: cards of any network, national phones ------------------------

def card_any():
    """A card of a network or length outside the usual IIN table."""
    kind = rnd.randrange(7)
    if kind == 0:  # JCB 16
        num = luhn_complete(str(rnd.randrange(3528, 3600)) + digits(11))
    elif kind == 1:  # JCB 15
        num = luhn_complete(pick(["2131", "1800"]) + digits(10))
    elif kind == 2:  # Diners 14
        num = luhn_complete(pick(["300", "301", "302", "303", "304", "305", "38", "39"]).ljust(3, "0") + digits(10))
    elif kind == 3:  # Visa 13
        num = luhn_complete("4" + digits(11))
    elif kind == 4:  # Maestro 12
        num = luhn_complete(pick(["50", "58", "60", "63", "67"]) + digits(9))
    elif kind == 5:  # UnionPay 19
        num = luhn_complete("62" + digits(16))
    else:  # Discover
        num = luhn_complete("6011" + digits(11))
    r = rnd.random()
    if len(num) == 16 and r < 0.4:
        return group(num, [4, 4, 4, 4], pick([" ", "-"]))
    if len(num) == 14 and r < 0.3:
        return group(num, [4, 6, 4], " ")
    if len(num) == 12 and r < 0.3:
        return group(num, [4, 4, 4], " ")
    return num


def phone_national():
    """A phone as written in its country, without the country code."""
    form = rnd.randrange(14)
    a3 = f"{rnd.randrange(201, 990)}"
    x3 = f"{rnd.randrange(200, 999)}"
    if form == 0:
        return f"({a3}) {x3}-{digits(4)}"
    if form == 1:
        return f"{a3}-{x3}-{digits(4)}"
    if form == 2:
        return f"{a3}.{x3}.{digits(4)}"
    if form == 3:
        return f"07{digits(3)} {digits(3)} {digits(3)}"
    if form == 4:
        return f"020 {digits(4)} {digits(4)}"
    if form == 5:
        sep = pick([" ", "."])
        return sep.join([f"0{rnd.randrange(1, 8)}"] + [digits(2) for _ in range(4)])
    if form == 6:
        return f"04{rnd.randrange(60, 100)} {digits(2)} {digits(2)} {digits(2)}"
    if form == 7:
        return f"{pick('679')}{digits(2)} {digits(3)} {digits(3)}"
    if form == 8:
        return f"0{rnd.randrange(30, 90)} {digits(8)}"
    if form == 9:
        return f"(0{rnd.randrange(2, 9)}) {digits(4)} {digits(4)}"
    if form == 10:
        return f"04{digits(2)} {digits(3)} {digits(3)}"
    if form == 11:
        return f"{x3} {digits(4)}"
    if form == 12:
        return f"{a3}-{x3}-{digits(4)}x{rnd.randrange(10, 9999)}"
    return f"001-{a3}-{x3}-{digits(4)}"


def phone_ru_local():
    area = pick(RU_AREAS)
    sub = digits(7)
    return pick([f"({area}) {sub[:3]}-{sub[3:5]}-{sub[5:]}", f"{area} {sub[:3]}-{sub[3:5]}-{sub[5:]}",
                 f"({area}) {sub[:3]} {sub[3:5]} {sub[5:]}"])


def s_card_any(m):
    if m.lang == "ru":
        m.t(pick(["Номер карты ", "карта ", "Заблокируйте карту ", "по карте ", "карта JCB "]))
    else:
        m.t(pick(["card number ", "My card ", "cc ", "I want to increase limit on my card # ",
                  "Please block card no ", "What is the limit for card ", "credit card: "]))
    m.p("card", card_any())
    m.t(pick(["", ".", "?", " is lost", ", срок 11/27" if m.lang == "ru" else " expires soon"]))


def s_phone_national(m):
    if m.lang == "ru":
        m.t(pick(["тел. ", "Позвоните мне: ", "телефон ", "Номер для связи ", "перезвоните на "]))
        m.p("phone", phone_ru_local())
        m.t(pick(["", ".", ", спасибо"]))
        return
    form = rnd.randrange(3)
    if form == 0:
        m.t(pick(["Phone: ", "call me at ", "Can someone call me on ", "I'd like to stop receiving messages to ",
                  "Mobile: ", "Fax: ", "They're not answering at ", "Personal Info:\nPhone:\n", "Desk: "]))
        m.p("phone", phone_national())
        m.t(pick(["", ".", "?", " after 6pm"]))
    elif form == 1:
        m.t(pick(["Contacts:\n", "Reach us:\n"]))
        m.p("phone", phone_national())
        m.t(pick([" office", "-Fax", " mobile", " (home)"]))
    else:
        m.t("Name: " + pick(LAT_FIRST).capitalize() + " " + pick(LAT_LAST).capitalize() + "\nPhone: ")
        m.p("phone", phone_national())


def look_national():
    """Numbers after the same words that are not cards or phones."""
    k = rnd.randrange(16)
    dd, mm = rnd.randrange(1, 29), rnd.randrange(1, 13)
    if k == 0:
        return f"Call me about order {digits(9)}, please."
    if k == 1:
        return f"call me on {dd:02d}.{mm:02d}.2025 after {rnd.randrange(9, 18)}:00"
    if k == 2:
        return f"Phone: delivered on 2025-{mm:02d}-{dd:02d}"
    if k == 3:
        return f"My phone cost {rnd.randrange(10, 99)} {digits(3)} руб"
    if k == 4:
        return f"Can someone call me about invoice {digits(3)}-{digits(3)}-{digits(4)}?"
    if k == 5:
        return f"call me, tracking number {digits(4)} {digits(4)} {digits(4)}"
    if k == 6:
        return f"Order {luhn_complete(pick(['50', '63']) + digits(9))} was paid by card."
    if k == 7:
        return f"The card was declined, reference {luhn_complete('2131' + digits(10))}"
    if k == 8:
        return f"Certificate {luhn_complete('2131' + digits(10))} activated"
    if k == 9:
        return f"Gift voucher {group(luhn_complete(str(rnd.randrange(3590, 3600)) + digits(11)), [4, 4, 4, 4], ' ')} redeemed"
    if k == 10:
        return f"позвоните мне {dd:02d}.{mm:02d}.2025"
    if k == 11:
        return f"перезвоните по заявке {digits(9)}"
    if k == 12:
        return f"Fax: none. Order {digits(10)} shipped"
    if k == 13:
        return f"card {group(luhn_invalid16(), [4, 4, 4, 4], ' ')} was declined"
    if k == 14:
        return f"Ticket {digits(3)} {digits(3)} {digits(3)}, call me back"
    return f"Delivery slot {rnd.randrange(201, 990)}-{rnd.randrange(200, 999)}-{digits(4)} confirmed"


def hard_message():
    lang = "ru" if rnd.random() < 0.3 else "en"
    m = Msg(lang, pick(["customer", "customer", "operator"]))
    pieces = [pick(["card", "phone", "phone", "look", "look"]) for _ in range(pick([1, 2, 2, 3]))]
    for i, piece in enumerate(pieces):
        if i:
            m.t(pick([" ", "\n", ". "]) if not m.parts[-1].endswith((".", "!", "?", ":", "\n")) else " ")
        if piece == "card":
            s_card_any(m)
        elif piece == "phone":
            s_phone_national(m)
        else:
            m.t(look_national())
    return m.out()


def main():
    with open(OUT, "w", encoding="utf-8") as f:
        for _ in range(N_MESSAGES):
            f.write(json.dumps(message(), ensure_ascii=False) + "\n")
        rnd.seed(HARD_SEED)
        for _ in range(N_HARD):
            f.write(json.dumps(hard_message(), ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
