"""Stop strings found in text that grows piece by piece, at a cost per character independent of how many
stop strings there are: an Aho-Corasick automaton over the strings' characters, fed only the new text.

After every `feed`, `held` is the length of the longest end of the text that begins some stop string (what
a stream must hold back), and `match` the earliest occurrence seen so far: (start, stop string). Among
occurrences, the earliest start wins, then the shortest string — what `min((text.find(s), s) ...)` over every
string gives, since the text before a feed holds no occurrence.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence


class StopMatcher:
    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self._next: list[dict[str, int]] = [{}]  # trie edges, node 0 is the root
        self._depth = [0]  # characters from the root
        self._word: list[str | None] = [None]  # the stop string ending exactly at a node
        for s in self.stops:
            node = 0
            for ch in s:
                if ch not in self._next[node]:
                    self._next.append({})
                    self._depth.append(self._depth[node] + 1)
                    self._word.append(None)
                    self._next[node][ch] = len(self._next) - 1
                node = self._next[node][ch]
            self._word[node] = s
        self._fail = [0] * len(self._next)  # the longest proper suffix that is also a trie node
        self._best: list[str | None] = list(self._word)  # the longest stop string ending at a node
        queue = deque(self._next[0].values())
        while queue:
            node = queue.popleft()
            if self._best[node] is None:
                self._best[node] = self._best[self._fail[node]]
            for ch, child in self._next[node].items():
                f = self._fail[node]
                while f and ch not in self._next[f]:
                    f = self._fail[f]
                self._fail[child] = self._next[f].get(ch, 0) if self._next[f].get(ch, 0) != child else 0
                queue.append(child)
        self._state = 0
        self.fed = 0  # characters fed so far
        self.match: tuple[int, str] | None = None

    @property
    def held(self) -> int:
        """Length of the longest end of the text fed that is the beginning of a stop string."""
        return self._depth[self._state]

    def feed(self, text: str) -> tuple[int, str] | None:
        """Advance over `text`; the earliest occurrence of a stop string so far, or None."""
        state, nxt, fail, best = self._state, self._next, self._fail, self._best
        for n, ch in enumerate(text):
            while state and ch not in nxt[state]:
                state = fail[state]
            state = nxt[state].get(ch, 0)
            found = best[state]
            if found is not None:
                hit = (self.fed + n + 1 - len(found), found)
                if self.match is None or (hit[0], len(hit[1])) < (self.match[0], len(self.match[1])):
                    self.match = hit
        self._state = state
        self.fed += len(text)
        return self.match
