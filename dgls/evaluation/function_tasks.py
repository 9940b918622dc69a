"""Small functions with their own tests, written for dgls's function-test eval (never trained on).

`dgls eval --functions` blanks one function body at a time, asks for an infill where the body was,
and runs that function's `test_<name>`. The reference bodies here pass every test (CI checks it).
"""

from __future__ import annotations


def clamp(value, low, high):
    """Return value limited to the closed range [low, high]."""
    if value < low:
        return low
    if value > high:
        return high
    return value


def test_clamp():
    assert clamp(5, 0, 10) == 5
    assert clamp(-3, 0, 10) == 0
    assert clamp(42, 0, 10) == 10


def is_palindrome(text):
    """Whether text reads the same backwards, ignoring case and non-alphanumeric characters."""
    chars = [c.lower() for c in text if c.isalnum()]
    return chars == chars[::-1]


def test_is_palindrome():
    assert is_palindrome("A man, a plan, a canal: Panama")
    assert not is_palindrome("python")
    assert is_palindrome("")


def count_words(text):
    """Map each lower-cased word of text to the number of times it occurs."""
    counts = {}
    for word in text.lower().split():
        counts[word] = counts.get(word, 0) + 1
    return counts


def test_count_words():
    assert count_words("the cat and the hat") == {"the": 2, "cat": 1, "and": 1, "hat": 1}
    assert count_words("") == {}


def flatten(items):
    """Flatten one level of nesting: [[1, 2], [3]] -> [1, 2, 3]."""
    result = []
    for item in items:
        result.extend(item)
    return result


def test_flatten():
    assert flatten([[1, 2], [3], []]) == [1, 2, 3]
    assert flatten([]) == []


def chunks(items, size):
    """Split a list into consecutive lists of at most size elements."""
    return [items[i:i + size] for i in range(0, len(items), size)]


def test_chunks():
    assert chunks([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
    assert chunks([], 3) == []


def unique(items):
    """The items without duplicates, in the order of their first occurrence."""
    seen = set()
    result = []
    for item in items:
        if item not in seen:
            seen.add(item)
            result.append(item)
    return result


def test_unique():
    assert unique([3, 1, 3, 2, 1]) == [3, 1, 2]
    assert unique("abca") == ["a", "b", "c"]


def gcd(a, b):
    """Greatest common divisor of two non-negative integers (Euclid's algorithm)."""
    while b:
        a, b = b, a % b
    return a


def test_gcd():
    assert gcd(12, 18) == 6
    assert gcd(7, 0) == 7
    assert gcd(17, 5) == 1


def running_total(numbers):
    """Cumulative sums: [1, 2, 3] -> [1, 3, 6]."""
    total = 0
    result = []
    for n in numbers:
        total += n
        result.append(total)
    return result


def test_running_total():
    assert running_total([1, 2, 3]) == [1, 3, 6]
    assert running_total([]) == []


def transpose(matrix):
    """Rows become columns: [[1, 2], [3, 4]] -> [[1, 3], [2, 4]]."""
    return [list(row) for row in zip(*matrix, strict=True)]


def test_transpose():
    assert transpose([[1, 2, 3], [4, 5, 6]]) == [[1, 4], [2, 5], [3, 6]]
    assert transpose([]) == []


def snake_to_camel(name):
    """Convert snake_case to camelCase: "max_span_tokens" -> "maxSpanTokens"."""
    first, *rest = name.split("_")
    return first + "".join(part.capitalize() for part in rest)


def test_snake_to_camel():
    assert snake_to_camel("max_span_tokens") == "maxSpanTokens"
    assert snake_to_camel("name") == "name"


def parse_pairs(text):
    """Parse "a=1;b=2" into {"a": "1", "b": "2"}, skipping empty parts."""
    result = {}
    for part in text.split(";"):
        if part:
            key, _, value = part.partition("=")
            result[key.strip()] = value.strip()
    return result


def test_parse_pairs():
    assert parse_pairs("a=1;b=2") == {"a": "1", "b": "2"}
    assert parse_pairs("x = 3;;") == {"x": "3"}
    assert parse_pairs("") == {}


def median(values):
    """Median of a non-empty list of numbers (mean of the middle two for even lengths)."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2


def test_median():
    assert median([3, 1, 2]) == 2
    assert median([4, 1, 3, 2]) == 2.5


def count_vowels(text):
    """Number of vowels (a, e, i, o, u, either case) in text."""
    return sum(1 for c in text.lower() if c in "aeiou")


def test_count_vowels():
    assert count_vowels("Hello World") == 3
    assert count_vowels("xyz") == 0


def reverse_words(sentence):
    """The words of sentence in reverse order, joined by single spaces."""
    return " ".join(reversed(sentence.split()))


def test_reverse_words():
    assert reverse_words("one two  three") == "three two one"
    assert reverse_words("") == ""


def factorial(n):
    """n! for a non-negative integer n."""
    result = 1
    for i in range(2, n + 1):
        result *= i
    return result


def test_factorial():
    assert factorial(0) == 1
    assert factorial(5) == 120


def fibonacci(n):
    """The first n Fibonacci numbers, starting 0, 1."""
    result = []
    a, b = 0, 1
    for _ in range(n):
        result.append(a)
        a, b = b, a + b
    return result


def test_fibonacci():
    assert fibonacci(7) == [0, 1, 1, 2, 3, 5, 8]
    assert fibonacci(0) == []


def is_prime(n):
    """Whether the integer n is a prime number."""
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


def test_is_prime():
    assert [n for n in range(20) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19]


def rotate(items, k):
    """Rotate a list right by k places: rotate([1, 2, 3, 4], 1) -> [4, 1, 2, 3]."""
    if not items:
        return []
    k %= len(items)
    return items[-k:] + items[:-k]


def test_rotate():
    assert rotate([1, 2, 3, 4], 1) == [4, 1, 2, 3]
    assert rotate([1, 2, 3], 4) == [3, 1, 2]
    assert rotate([], 2) == []


def merge_counts(first, second):
    """A new dict with the values of keys in both dicts added together."""
    merged = dict(first)
    for key, value in second.items():
        merged[key] = merged.get(key, 0) + value
    return merged


def test_merge_counts():
    assert merge_counts({"a": 1, "b": 2}, {"b": 3, "c": 4}) == {"a": 1, "b": 5, "c": 4}
    assert merge_counts({}, {}) == {}


def max_index(values):
    """Index of the largest value (the first one on ties); -1 for an empty list."""
    best = -1
    for i, value in enumerate(values):
        if best == -1 or value > values[best]:
            best = i
    return best


def test_max_index():
    assert max_index([3, 9, 2, 9]) == 1
    assert max_index([]) == -1
