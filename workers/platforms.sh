# Sourced by base-image.sh and build-image.sh: PLATFORM (comma-separated) -> the array
# `archs` (amd64, arm64), every entry checked before anything is built. $1 names the caller
# in the error.
platforms_to_archs() {
    local who="$1" platform
    local -a platforms
    IFS=, read -ra platforms <<<"$PLATFORM"
    archs=()
    for platform in "${platforms[@]}"; do
        case "$platform" in
            linux/amd64) archs+=(amd64) ;;
            linux/arm64 | linux/arm64/v8) archs+=(arm64) ;;
            *)
                echo "$who: PLATFORM $platform is not supported; use linux/amd64, linux/arm64 or both." >&2
                exit 2
                ;;
        esac
    done
}
