#!/usr/bin/env bash
# The platform's function runtime images, built locally (no registry is reachable):
#
#   scripts/images.sh [build] [shell|python3|node ...]   build the missing ones (default: all three)
#   scripts/images.sh load-to-node NAME                  copy them onto a worker made by scripts/node.sh
#   scripts/images.sh versions                           print $LAMBDA_HOME/images/versions.env
#
#   lambda/runtime-shell:<ver>    FROM scratch + static busybox (applets as symlinks)
#   lambda/runtime-python3:<ver>  Debian root fs (debootstrap minbase + python3-minimal), `docker import`ed
#   lambda/runtime-node:<ver>     Debian root fs (debootstrap minbase + nodejs)
# Each: the runtime agent at /usr/local/bin/lambda-agent as ENTRYPOINT (a static binary: $LAMBDA_AGENT_BIN, else
# built by scripts/agent.sh into $LAMBDA_HOME/bin/lambda-agent), running as uid/gid 10001 (`lambda`), with
# LAMBDA_RUNTIME=<runtime>, LAMBDA_PORT=8080, LAMBDA_WORK_DIR=/tmp/lambda, and a Docker HEALTHCHECK
# (`lambda-agent healthcheck` every second: Swarm marks a task running only once its workers are warm).
# Containers are meant to run with a read-only root fs, a tmpfs on /tmp, no new privileges and an init.
#
# <ver> is a content version: the first 12 hex digits of sha256(agent binary, this script, base root fs
# tarball), so the tag changes exactly when the content does; an image whose tag exists is not rebuilt.
# The tags are written to $LAMBDA_HOME/images/versions.env (LAMBDA_IMAGE_SHELL/PYTHON3/NODE=...), which
# `scripts/swarm.sh env` exports and `scripts/node.sh add` loads onto new nodes.
#
# Environment: DOCKER_HOST (target daemon; default: the local manager, unix://$LAMBDA_HOME/swarm/manager.sock),
# LAMBDA_AGENT_BIN (a prebuilt static agent; default: scripts/agent.sh builds one), LAMBDA_DEBIAN_MIRROR
# (default: the Debian mirror apt uses), LAMBDA_DEBIAN_SUITE (bookworm).
#
# Two layers per image: a base (the root fs tarball, cached under $LAMBDA_HOME/images and imported once as
# lambda/base-<runtime>:<tarball hash>) and a thin platform layer (agent + config) built on top, so a new agent
# rebuilds in seconds while debootstrap runs only when its recipe changes.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
shopt -s inherit_errexit   # errors inside $(...) abort too
SCRIPTS=$PROJECT_ROOT/scripts
IMG=$LAMBDA_HOME/images
export DOCKER_HOST=${DOCKER_HOST:-unix://$LAMBDA_HOME/swarm/manager.sock}
SUITE=${LAMBDA_DEBIAN_SUITE:-bookworm}
AGENT_BIN=${LAMBDA_AGENT_BIN:-}
AGENT_DEFAULT=$LAMBDA_HOME/bin/lambda-agent
RUNTIMES=(shell python3 node)
LAMBDA_UID=10001
# Bump when the Debian root fs recipe (trimming, users) changes: with suite and packages it keys the cached
# debootstrap tarballs. (The busybox root fs takes a second to make: it is keyed by this whole script.)
ROOTFS_REV=1

sha() { sha256sum "$1" | cut -c1-64; }
short() { printf '%s' "$*" | sha256sum | cut -c1-12; }

# The Debian mirror apt already uses (a `.../debian` URI in sources.list or deb822 .sources), else the default.
debian_mirror() {
  [ -n "${LAMBDA_DEBIAN_MIRROR:-}" ] && { echo "$LAMBDA_DEBIAN_MIRROR"; return; }
  local m
  m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
      grep -oE '^(URIs:[[:space:]]*|deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)[^[:space:]]+/debian/?([[:space:]]|$)' |
      grep -oE '[a-z]+://[^[:space:]]+' | head -1 || true)
  echo "${m:-http://deb.debian.org/debian}"
}

packages_of() {   # Debian packages on top of minbase, per runtime
  # python3-minimal alone lacks json, http, urllib, asyncio (they are in libpython3-stdlib): useless for
  # handlers that take JSON events. The full `python3` package would add pydoc/2to3/tzdata on top of this.
  case $1 in python3) echo python3-minimal libpython3-stdlib ;; node) echo nodejs ;; esac
}

# add_user ROOT — the non-root user functions run as (no useradd: works for the busybox root too).
add_user() {
  local r=$1
  mkdir -p "$r/etc" "$r/home/lambda" "$r/tmp"
  grep -q '^lambda:' "$r/etc/passwd" 2>/dev/null ||
    echo "lambda:x:$LAMBDA_UID:$LAMBDA_UID:lambda function:/home/lambda:/bin/sh" >>"$r/etc/passwd"
  grep -q '^lambda:' "$r/etc/group" 2>/dev/null || echo "lambda:x:$LAMBDA_UID:" >>"$r/etc/group"
  [ -f "$r/etc/shadow" ] && { grep -q '^lambda:' "$r/etc/shadow" || echo 'lambda:!:19000::::::' >>"$r/etc/shadow"; }
  chown "$LAMBDA_UID:$LAMBDA_UID" "$r/home/lambda"
  chmod 1777 "$r/tmp"
}

# pack ROOT TARBALL — a reproducible tarball (sorted, fixed mtime, numeric owners), then its sha256 alongside.
pack() {
  tar -C "$1" --sort=name --mtime=@0 --numeric-owner -cf "$2.tmp" .
  mv "$2.tmp" "$2"
  sha "$2" >"$2.sha256"
}

rootfs_shell() {   # rootfs_shell ROOT — busybox and its applets as symlinks (the layout busybox itself lists)
  local r=$1 applet
  mkdir -p "$r/bin" "$r/etc"
  cp /bin/busybox "$r/bin/busybox"
  for applet in $(/bin/busybox --list-full); do
    [ "$applet" = bin/busybox ] && continue
    mkdir -p "$r/$(dirname "$applet")"
    ln -s /bin/busybox "$r/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$r/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
  mkdir -m 700 "$r/root"
  add_user "$r"
}

rootfs_debian() {   # rootfs_debian RUNTIME ROOT — debootstrap minbase + the runtime's packages, trimmed
  local rt=$1 r=$2 mirror; mirror=$(debian_mirror)
  log "debootstrap $SUITE ($(packages_of "$rt")) from $mirror"
  debootstrap --variant=minbase --include="$(packages_of "$rt" | tr ' ' ,)" "$SUITE" "$r" "$mirror" \
    >"$IMG/debootstrap-$rt.log" 2>&1 || { tail -20 "$IMG/debootstrap-$rt.log" >&2; die "debootstrap failed"; }
  # Nothing in a function container uses the package caches or documentation.
  rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/* "$r"/usr/share/doc/* "$r"/usr/share/man/* \
    "$r"/usr/share/info/* "$r"/var/log/*.log "$r"/var/cache/debconf/*-old
  add_user "$r"
}

# rootfs RUNTIME — path of the cached root fs tarball, built when missing.
rootfs() {
  local rt=$1 key tarball
  case $rt in
    shell) key=$(short "$(sha "${BASH_SOURCE[0]}")" "$(sha /bin/busybox)") ;;
    *) key=$(short "$ROOTFS_REV" "$SUITE" "$(packages_of "$rt")") ;;
  esac
  tarball=$IMG/rootfs-$rt-$key.tar
  if [ ! -f "$tarball" ] || [ ! -f "$tarball.sha256" ]; then
    local work=$IMG/work-$rt start=$SECONDS
    rm -rf "$work"; mkdir -p "$work"
    if [ "$rt" = shell ]; then rootfs_shell "$work"; else rootfs_debian "$rt" "$work"; fi
    pack "$work" "$tarball"
    rm -rf "$work"
    find "$IMG" -maxdepth 1 -name "rootfs-$rt-*.tar*" ! -name "${tarball##*/}*" -delete   # superseded recipes
    log "root fs $rt: $(du -h "$tarball" | cut -f1) in $((SECONDS - start)) s → $tarball"
  fi
  echo "$tarball"
}

# build RUNTIME — prints the image reference.
build() {
  local rt=$1 tarball tarsha agentsha ver ref base
  tarball=$(rootfs "$rt"); tarsha=$(cat "$tarball.sha256")
  agentsha=$(sha "$AGENT_BIN")
  ver=$(short "$agentsha" "$(sha "${BASH_SOURCE[0]}")" "$tarsha")
  ref=lambda/runtime-$rt:$ver
  if docker image inspect "$ref" >/dev/null 2>&1; then
    log "$ref exists"; echo "$ref"; return 0
  fi
  local start=$SECONDS
  base=lambda/base-$rt:${tarsha:0:12}
  docker image inspect "$base" >/dev/null 2>&1 || docker import --message "lambda $rt root fs" "$tarball" "$base" >/dev/null

  local ctx=$IMG/context-$rt path
  rm -rf "$ctx"; mkdir -p "$ctx"
  case $rt in
    shell) path=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin ;;
    *) path=/usr/local/bin:/usr/bin:/bin ;;
  esac
  install -m 0755 "$AGENT_BIN" "$ctx/lambda-agent"      # (COPY --chmod needs BuildKit)
  {
    echo "FROM $base"
    echo "ENV PATH=$path LANG=C.UTF-8 LAMBDA_RUNTIME=$rt LAMBDA_PORT=8080 LAMBDA_WORK_DIR=/tmp/lambda"
    echo "LABEL lambda.runtime=$rt lambda.image.version=$ver"
    echo 'COPY lambda-agent /usr/local/bin/lambda-agent'
    echo "USER $LAMBDA_UID:$LAMBDA_UID"
    echo "WORKDIR /home/lambda"
    echo "EXPOSE 8080"
    # Fast probes: a task counts as running only once healthy, so the interval bounds cold start.
    echo 'HEALTHCHECK --interval=1s --timeout=1s --start-period=10s --retries=3 CMD ["/usr/local/bin/lambda-agent", "healthcheck"]'
    echo 'ENTRYPOINT ["/usr/local/bin/lambda-agent"]'
  } >"$ctx/Dockerfile"
  # The legacy builder (no BuildKit/buildx here) prints a deprecation notice on stderr: keep it in a log.
  DOCKER_BUILDKIT=0 docker build -q -t "$ref" "$ctx" >/dev/null 2>"$IMG/build-$rt.log" ||
    { cat "$IMG/build-$rt.log" >&2; die "docker build of $ref failed"; }
  rm -rf "$ctx"
  log "built $ref in $((SECONDS - start)) s"
  echo "$ref"
}

# write_version RUNTIME REF — update one line of versions.env, keeping the others.
write_version() {
  local var f=$IMG/versions.env
  var=LAMBDA_IMAGE_$(tr '[:lower:]' '[:upper:]' <<<"$1")
  touch "$f"
  { grep -v "^$var=" "$f" || true; echo "$var=$2"; } | sort >"$f.tmp"
  mv "$f.tmp" "$f"
}

build_all() {
  local rts=("$@") rt ref
  [ ${#rts[@]} -gt 0 ] || rts=("${RUNTIMES[@]}")
  for rt in "${rts[@]}"; do
    [[ " ${RUNTIMES[*]} " == *" $rt "* ]] || die "unknown runtime '$rt' (one of: ${RUNTIMES[*]})"
  done
  apt_ensure busybox-static debootstrap docker.io
  docker version >/dev/null 2>&1 || die "no Docker daemon at $DOCKER_HOST (scripts/swarm.sh up)"
  if [ -z "$AGENT_BIN" ]; then
    # Rebuild (a cargo no-op when unchanged) so the images never carry a stale agent; without cargo, use the
    # one installed earlier.
    if command -v cargo >/dev/null; then AGENT_BIN=$("$SCRIPTS/agent.sh" build)
    elif [ -x "$AGENT_DEFAULT" ]; then AGENT_BIN=$AGENT_DEFAULT
    else die "no runtime agent: set LAMBDA_AGENT_BIN or install cargo (scripts/agent.sh builds it)"; fi
  fi
  [ -x "$AGENT_BIN" ] || die "LAMBDA_AGENT_BIN=$AGENT_BIN is not an executable file"
  mkdir -p "$IMG"
  for rt in "${rts[@]}"; do
    ref=$(build "$rt")
    write_version "$rt" "$ref"
  done
  cat "$IMG/versions.env"
}

load_to_node() {
  local name=${1:-}; [ -n "$name" ] || die "usage: $0 load-to-node NAME"
  [ -f "$IMG/versions.env" ] || die "no images built yet: $0 build"
  local refs; refs=$(sed -n 's/^LAMBDA_IMAGE_[A-Z0-9_]*=//p' "$IMG/versions.env")
  # shellcheck disable=SC2086 # one ref per word
  "$SCRIPTS/node.sh" load "$name" $refs
}

case "${1:-build}" in
  build) shift || true; build_all "$@" ;;
  shell | python3 | node) build_all "$@" ;;
  load-to-node) load_to_node "${2:-}" ;;
  versions) cat "$IMG/versions.env" ;;
  *) echo "usage: $0 [build] [shell|python3|node ...] | load-to-node NAME | versions" >&2; exit 2 ;;
esac
