#!/usr/bin/env bash
# What `cmake --install` and the .deb put on a machine, checked from the
# outside:
#
#   - installs into a temporary DESTDIR with the prefix /usr: the binary,
#     libsluice.a and libsluice.so (with its soname, and only the public
#     sl_* symbols exported), the headers, sluice.pc, sluice(1) and the
#     systemd units;
#   - builds examples/embed.c with nothing but the installed pkg-config file
#     (PKG_CONFIG_SYSROOT_DIR into the DESTDIR) against the shared library,
#     and runs it on a private redis-server: 20 items done;
#   - the manual page holds every command's usage line, as --help prints it;
#   - systemd-analyze verify accepts both units (the worker's as an
#     instance);
#   - cpack -G DEB builds a .deb whose contents (dpkg-deb -c) are these
#     files, whose dependencies dpkg accepts on this machine (--dry-run),
#     and whose binary runs once unpacked.
#
# usage: test_install.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
# (no `producer | grep -q` or `| head` below: under pipefail the producer's
# SIGPIPE would fail the test at random)
SRC=$1
BUILD=$2
T=$(mktemp -d "${TMPDIR:-/tmp}/sluice-install-XXXXXX")
REDIS_PID=
cleanup() {
  [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "not ok - $*" >&2; exit 1; }
ok() { echo "ok - $*"; }

DEST=$T/root
DESTDIR=$DEST cmake --install "$BUILD" --prefix /usr >"$T/install.log"
LIBDIR=$(sed -n 's/^libdir=//p' "$DEST"/usr/lib/pkgconfig/sluice.pc "$DEST"/usr/lib/*/pkgconfig/sluice.pc 2>/dev/null | head -1 || true)
[ -n "$LIBDIR" ] || fail "no sluice.pc installed: $(cat "$T/install.log")"
for f in usr/bin/sluice "${LIBDIR#/}/libsluice.a" "${LIBDIR#/}/libsluice.so" usr/include/sluice/sluice.h \
         usr/include/sluice/client.h usr/include/sluice/job.h usr/include/sluice/worker.h \
         usr/share/man/man1/sluice.1 usr/lib/systemd/system/sluice-worker@.service usr/lib/systemd/system/sluice-serve.service; do
  [ -e "$DEST/$f" ] || fail "cmake --install did not install $f"
done
SONAME=$(readelf -d "$DEST$LIBDIR/libsluice.so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
[[ $SONAME == libsluice.so.0.* ]] || fail "soname: $SONAME"
[ -e "$DEST$LIBDIR/$SONAME" ] || fail "no $SONAME next to libsluice.so"
EXPORTED=$(nm -D --defined-only "$DEST$LIBDIR/libsluice.so" | awk '$2 ~ /[TDBR]/ {print $3}')
BAD=$(echo "$EXPORTED" | grep -v '^sl_' | grep -v '^_' || true)
[ -z "$BAD" ] || fail "libsluice.so exports non-public symbols: $(echo $BAD | head -c 300)"
INTERNAL=$(echo "$EXPORTED" | grep '^sl__' || true)
[ -z "$INTERNAL" ] || fail "libsluice.so exports internal symbols: $(echo $INTERNAL | head -c 300)"
ok "installed into DESTDIR: binary, libsluice.a, $SONAME ($(echo "$EXPORTED" | grep -c '^sl_') public symbols, nothing else), headers, sluice.pc, sluice.1, units"

# embed.c against the installed pkg-config file only
export PKG_CONFIG_SYSROOT_DIR=$DEST PKG_CONFIG_PATH=$DEST$LIBDIR/pkgconfig
FLAGS=$(pkg-config --cflags --libs sluice libuv libcjson)
[[ $FLAGS == *"-I$DEST/usr/include"* ]] || fail "pkg-config --cflags: $FLAGS"
cc -std=c11 -D_POSIX_C_SOURCE=200809L -o "$T/embed" "$SRC/examples/embed.c" $FLAGS
LDD=$(LD_LIBRARY_PATH=$DEST$LIBDIR ldd "$T/embed")
[[ $LDD == *"$DEST$LIBDIR/libsluice.so"* ]] || fail "embed does not use the installed libsluice.so: $LDD"
redis-server --port 0 --unixsocket "$T/redis.sock" --save '' --appendonly no --dir "$T" --logfile "$T/redis.log" &
REDIS_PID=$!
for _ in $(seq 100); do [ -S "$T/redis.sock" ] && break; sleep 0.05; done
[ -S "$T/redis.sock" ] || fail "redis-server did not start"
"$DEST/usr/bin/sluice" library load --redis "unix://$T/redis.sock" >/dev/null 2>&1 || fail "the installed sluice could not load the library"
OUT=$(LD_LIBRARY_PATH=$DEST$LIBDIR timeout 60 "$T/embed" "unix://$T/redis.sock" installed 20 2>&1) || fail "embed: $OUT"
[[ $OUT == *"embed: 20 items done"* ]] || fail "embed printed: $OUT"
ok "examples/embed.c built with pkg-config alone, linked to the installed libsluice.so, ran 20 items"

# the manual page is the help text
MAN=$DEST/usr/share/man/man1/sluice.1
for cmd in $("$DEST/usr/bin/sluice" help nosuchtopic 2>&1 | sed -n 's/^commands://p'); do
  help=$("$DEST/usr/bin/sluice" "$cmd" --help)
  line=${help%%$'\n'*}
  grep -qF -- "$line" "$MAN" || fail "sluice.1 lacks \"$line\" ($cmd --help)"
  n=$((${n:-0} + 1))
done
[ "${n:-0}" -ge 15 ] || fail "only ${n:-0} commands checked in sluice.1"
if command -v groff >/dev/null; then
  WARN=$(groff -man -Tutf8 -ww -z "$MAN" 2>&1 || true)
  [ -z "$WARN" ] || fail "groff warns about sluice.1: $WARN"
fi
ok "sluice.1 holds the usage of all $n commands as --help prints them"

# the units
if command -v systemd-analyze >/dev/null; then
  U=$T/units
  mkdir -p "$U"
  grep -q "^ExecStart=/usr/bin/sluice worker" "$DEST/usr/lib/systemd/system/sluice-worker@.service" ||
    fail "the worker unit does not run the installed /usr/bin/sluice"
  sed "s|/usr/bin/sluice|$DEST/usr/bin/sluice|" "$DEST/usr/lib/systemd/system/sluice-serve.service" >"$U/sluice-serve.service"
  sed "s|/usr/bin/sluice|$DEST/usr/bin/sluice|" "$DEST/usr/lib/systemd/system/sluice-worker@.service" >"$U/sluice-worker@.service"
  (cd "$U" && SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$U/sluice-serve.service" \
     "$U/sluice-worker@.service" >"$T/verify.log" 2>&1) || fail "systemd-analyze verify: $(cat "$T/verify.log")"
  grep -q . "$T/verify.log" && fail "systemd-analyze verify says: $(cat "$T/verify.log")"
  for u in sluice-serve.service sluice-worker@.service; do
    for k in DynamicUser=yes ProtectSystem=strict NoNewPrivileges=yes; do
      grep -qx "$k" "$U/$u" || fail "$u lacks $k"
    done
  done
  ok "systemd-analyze verify accepts sluice-serve.service and sluice-worker@.service (hardened: DynamicUser, ProtectSystem=strict, NoNewPrivileges)"
else
  fail "systemd-analyze is missing (apt-get install systemd; scripts/dev installs it)"
fi

# the .deb
(cd "$BUILD" && cpack -G DEB -B "$T/deb" >"$T/cpack.log" 2>&1) || fail "cpack: $(tail -5 "$T/cpack.log")"
DEB=$(ls "$T"/deb/sluice_*.deb)
dpkg-deb -c "$DEB" | awk '{print $6}' >"$T/contents"
for f in ./usr/bin/sluice "./usr${LIBDIR#/usr}/libsluice.so" "./usr${LIBDIR#/usr}/$SONAME" "./usr${LIBDIR#/usr}/libsluice.a" \
         "./usr${LIBDIR#/usr}/pkgconfig/sluice.pc" ./usr/include/sluice/sluice.h ./usr/share/man/man1/sluice.1 \
         ./usr/lib/systemd/system/sluice-worker@.service ./usr/lib/systemd/system/sluice-serve.service; do
  grep -qxF "$f" "$T/contents" || fail "the .deb lacks $f: $(tr '\n' ' ' <"$T/contents")"
done
UNIT=$(dpkg-deb --fsys-tarfile "$DEB" | tar -xO ./usr/lib/systemd/system/sluice-serve.service)
[[ $UNIT == *$'\n'"ExecStart=/usr/bin/sluice serve "* ]] || fail "the .deb's unit does not run /usr/bin/sluice: $UNIT"
INFO=$(dpkg-deb -I "$DEB")  # (not piped into grep -q: an early exit would be a SIGPIPE under pipefail)
[[ $INFO == *"Depends: "*libhiredis0.14* ]] || fail "the .deb's dependencies: $INFO"
dpkg --dry-run -i "$DEB" >"$T/dry.log" 2>&1 || fail "dpkg --dry-run -i: $(cat "$T/dry.log")"
dpkg-deb -x "$DEB" "$T/unpacked"
VERSION=$("$T/unpacked/usr/bin/sluice" --version)
[[ $VERSION == "sluice "* ]] || fail "the unpacked binary does not run: $VERSION"
ok "cpack built $(basename "$DEB") ($(wc -l <"$T/contents") entries); dpkg accepts it (--dry-run); its binary runs"
