#!/bin/sh
# docs-check.sh [--update] [ROOT] — the lab's numbers in the docs are the latest run's.
#
# A number the docs quote from a measurement sits between markers:
#     <!-- lab:KEY -->VALUE<!-- /lab -->
# and KEY=VALUE is a line of a file a command generated, ROOT/docs/runs/*.keys (make lab
# writes them: ./bench pipeline's NAME.keys, the stamp in lab.keys). The check compares
# text, it measures nothing: it fails, naming file, line and both values, when a marked
# value differs from its key's, and when a key is in no file. --update writes each
# key's value between its markers instead (make lab does, after measuring).
# ROOT defaults to the repository; the Makefile's docs-check also runs it on a scratch
# copy with a planted stale value, which must fail.
update=0
if [ "$1" = --update ]; then update=1; shift; fi
root=${1:-.}
keys=$(ls "$root"/docs/runs/*.keys 2>/dev/null)
if [ -z "$keys" ]; then
  echo "docs-check: no $root/docs/runs/*.keys to compare with. HINT: run make lab"
  exit 1
fi
docs="$root/README.md $(ls "$root"/docs/*.md)"
status=0
for doc in $docs; do
  # Reads the keys files first (every KEY=VALUE), then the page: each marker's value is
  # checked or, with --update, replaced; the page (updated) goes to stdout, the
  # complaints to stderr, and the exit code says whether there were any.
  awk -v update=$update -v page="$doc" '
    FILENAME != page {
      if ($0 ~ /^#/ || index($0, "=") == 0) next
      i = index($0, "=")
      val[substr($0, 1, i - 1)] = substr($0, i + 1)
      next
    }
    {
      out = ""; line = $0
      while ((s = index(line, "<!-- lab:")) > 0) {
        rest = substr(line, s + 9)
        e = index(rest, " -->")
        if (e == 0) { printf "%s:%d: a lab marker without its \" -->\"\n", page, FNR > "/dev/stderr"; bad++; break }
        key = substr(rest, 1, e - 1)
        rest = substr(rest, e + 4)
        c = index(rest, "<!-- /lab -->")
        if (c == 0) {
          printf "%s:%d: lab:%s has no <!-- /lab --> on its line\n", page, FNR, key > "/dev/stderr"; bad++; break
        }
        v = substr(rest, 1, c - 1)
        out = out substr(line, 1, s + 8) key " -->"
        checked++
        if (!(key in val)) {
          printf "%s:%d: lab:%s is in no docs/runs/*.keys file. HINT: a typo in the key, or run make lab\n", \
            page, FNR, key > "/dev/stderr"
          bad++
          out = out v
        } else if (val[key] != v && !update) {
          printf "%s:%d: lab:%s says \"%s\", the latest run wrote \"%s\". HINT: run make lab (or the docs " \
            "took a number by hand)\n", page, FNR, key, v, val[key] > "/dev/stderr"
          bad++
          out = out v
        } else {
          out = out val[key]
        }
        out = out "<!-- /lab -->"
        line = substr(rest, c + 13)
      }
      print out line
    }
    END {
      printf "%d %d\n", checked, bad > "/dev/stderr"
      exit bad > 0
    }' $keys "$doc" >"$doc.docs-check" 2>"$doc.docs-check.err"
  rc=$?
  counts=$(tail -n 1 "$doc.docs-check.err")
  sed '$d' "$doc.docs-check.err"
  n=${counts%% *}
  total=$((${total:-0} + n))
  if [ "$rc" != 0 ]; then status=1; fi
  if [ "$update" = 1 ] && [ "$rc" = 0 ] && ! cmp -s "$doc" "$doc.docs-check"; then
    cat "$doc.docs-check" >"$doc" && echo "docs-check: updated $doc"
  fi
  rm -f "$doc.docs-check" "$doc.docs-check.err"
done
if [ "$status" != 0 ]; then
  echo "docs-check: FAILED: a marked value is not the latest run's (above)"
  exit 1
fi
echo "docs-check: $total marked values are the latest run's ($(echo $keys | wc -w) keys files)"
