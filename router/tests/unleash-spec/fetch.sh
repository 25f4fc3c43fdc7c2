#!/bin/sh
# Re-downloads Unleash's client specification into this directory: the package's
# specifications/*.json and its LICENSE. Needs npm; the tests themselves do not.
set -eu
VERSION=${1:-6.1.0}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# npm pack checks the tarball against the registry's integrity hash.
tarball=$(npm pack --silent "@unleash/client-specification@$VERSION")
tar xzf "$tarball"
rm -f "$here"/*.json
cp package/specifications/*.json "$here"/
cp package/LICENSE "$here"/LICENSE
echo "unleash client specification $VERSION in $here (update the version in README.md)"
