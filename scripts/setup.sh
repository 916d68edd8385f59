# setup.sh: sourced by scripts/test and scripts/demo. Installs the Debian packages
# adtape needs (only those missing) and configures the build folder.

# What building and the demo need; the tests add a reference implementation in Python
# (numpy and PyTorch from Debian: large, so the demo does not install them), Open MPI,
# so that libadtape-mpi (meson's optional 'mpi' feature) is built and tested, and clang,
# which builds and runs the suite a second time.
ADTAPE_PACKAGES="gcc libc6-dev meson ninja-build pkg-config libopenblas-dev uthash-dev \
libcriterion-dev zlib1g-dev libjansson-dev dataset-fashion-mnist"
ADTAPE_TEST_PACKAGES="python3-numpy python3-torch libopenmpi-dev openmpi-bin clang"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_packages() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "Installing: ${missing[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
}

# configure_build DIR [meson options...]: sets up DIR once, reconfigures after that.
configure_build() {
    local dir=$1
    shift
    if [ -f "$dir/build.ninja" ]; then
        meson configure "$dir" "$@" >/dev/null
    else
        meson setup "$dir" "$@" >/dev/null
    fi
}
