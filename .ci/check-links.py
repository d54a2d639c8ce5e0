#!/usr/bin/env python3
"""Checks that every relative link in the repository's Markdown resolves: the
file exists and, for `#anchor`, the file has a heading with that anchor
(GitHub's rule). With --fix, a link whose anchor lives in one other file is
pointed there, and a repository-root path is made relative to the file."""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINK = re.compile(r'\]\(([^)\s]+)\)')
SKIP_DIRS = {'.git', 'target', 'node_modules', 'fuzz'}


def markdown_files():
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        for name in files:
            if name.endswith('.md'):
                yield os.path.join(folder, name)


def slug(heading):
    text = re.sub(r'[`*_]', lambda m: '_' if m.group() == '_' else '', heading.strip().lower())
    text = re.sub(r'[^\w\- ]', '', text)
    return text.replace(' ', '-')


def prose_lines(path):
    fenced = False
    for number, line in enumerate(open(path, encoding='utf-8'), 1):
        if line.lstrip().startswith('```'):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def anchors(path):
    seen = {}
    found = set()
    for _, line in prose_lines(path):
        match = re.match(r'#{1,6} (.+)', line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f'{base}-{count}')
    return found


def main():
    fix = '--fix' in sys.argv
    files = list(markdown_files())
    anchor_sets = {path: anchors(path) for path in files}
    broken = []
    for path in files:
        text = open(path, encoding='utf-8').read()
        changed = text
        for number, line in prose_lines(path):
            for target in LINK.findall(line):
                if re.match(r'[a-z]+:', target):
                    continue  # http:, https:, mailto:
                file_part, _, anchor = target.partition('#')
                here = os.path.dirname(path)
                resolved = os.path.normpath(os.path.join(here, file_part)) if file_part else path
                if file_part and not os.path.exists(resolved):
                    from_root = os.path.normpath(os.path.join(ROOT, file_part))
                    if fix and os.path.exists(from_root):
                        new = os.path.relpath(from_root, here) + (f'#{anchor}' if anchor else '')
                        changed = changed.replace(f']({target})', f']({new})')
                        continue
                    broken.append(f'{os.path.relpath(path, ROOT)}:{number}: {target}: no such file')
                    continue
                if anchor and resolved.endswith('.md') and anchor not in anchor_sets.get(resolved, set()):
                    homes = [p for p, a in anchor_sets.items() if anchor in a]
                    if fix and len(homes) == 1:
                        rel = os.path.relpath(homes[0], here)
                        new = f'#{anchor}' if homes[0] == path else f'{rel}#{anchor}'
                        changed = changed.replace(f']({target})', f']({new})')
                        continue
                    broken.append(f'{os.path.relpath(path, ROOT)}:{number}: {target}: no such anchor')
        if fix and changed != text:
            open(path, 'w', encoding='utf-8').write(changed)
    for line in broken:
        print(line)
    if broken:
        print(f'{len(broken)} broken link(s)', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
