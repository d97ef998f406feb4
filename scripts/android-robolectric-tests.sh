#!/usr/bin/env bash
# The Android module (android/doorstep + android/common) compiled against android-all and the
# AndroidX libraries from Maven Central, and its Robolectric tests run on the host JVM against the
# host-built libdoorstep_ffi. No Android SDK, NDK or Gradle: see android/robolectric/pom.xml.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

command -v mvn >/dev/null || { echo "Maven is required (apt-get install maven)" >&2; exit 1; }
cargo build --quiet --locked -p doorstep-ffi --features fixtures
bash scripts/generate-bindings.sh --android target/debug/libdoorstep_ffi.so target/bindings-android >/dev/null

# AndroidX libraries: resolved with their tree, each AAR reduced to its classes.jar. Kotlin and
# coroutines come from the test pom's own versions instead.
libs="$root/target/android-libraries"
rm -rf "$libs" && mkdir -p "$libs/resolved" "$libs/jars"
mvn -B -q -ntp -f android/robolectric/android-libraries.xml dependency:copy-dependencies \
  -DoutputDirectory="$libs/resolved" \
  -DexcludeGroupIds=org.jetbrains.kotlin \
  -DexcludeArtifactIds=kotlinx-coroutines-core,kotlinx-coroutines-core-jvm,kotlinx-coroutines-android
deps=""
for f in "$libs"/resolved/*; do
  name="$(basename "$f")"
  case "$name" in
    *.aar) jar="$libs/jars/${name%.aar}.jar"; unzip -p "$f" classes.jar > "$jar" ;;
    *.jar) jar="$libs/jars/$name"; cp "$f" "$jar" ;;
    *) continue ;;
  esac
  id="${name%.*}"
  deps+="<dependency><groupId>android-libraries</groupId><artifactId>$id</artifactId><version>0</version>"
  deps+="<scope>system</scope><systemPath>$jar</systemPath></dependency>"$'\n'
done

out="$root/target/robolectric"
mkdir -p "$out"
DEPS="$deps" ROOT="$root" python3 - "$root/android/robolectric/pom.xml" "$out/pom.xml" <<'PY'
import os, sys
template = open(sys.argv[1]).read()
pom = template.replace("@ROOT@", os.environ["ROOT"]).replace("<!-- @ANDROID_LIBRARIES@ -->", os.environ["DEPS"])
open(sys.argv[2], "w").write(pom)
PY
mvn -B -ntp -f "$out/pom.xml" test "$@" | grep -vE "^\[INFO\] (Download|---|$)|^\[WARNING\] .*(system|systemPath|scope)|^\[WARNING\] *$|^\[WARNING\] It is highly recommended|^\[WARNING\] For this reason|^\[WARNING\] Some problems were encountered"
