"""Small statistics helpers: an example file for `dgls infill`."""


def mean(values):
    """Arithmetic mean of a non-empty sequence."""
    total = 0
    for value in values:
        
    return total / len(values)


def variance(values):
    """Population variance."""
    m = mean(values)
    return sum((v - m) ** 2 for v in values) / len(values)


if __name__ == "__main__":
    print(mean([1, 2, 3]), variance([1, 2, 3]))
