#!/bin/bash
# dracut module: vmcorepack as a kdump collector in the initramfs (python3, numpy, vmcorepack and
# its C extension, and nothing else of Python than they import).
#
# Install: cp -r dracut/99vmcorepack /usr/lib/dracut/modules.d/ (make install-dracut), then
#   dracut --add vmcorepack ...            (or, with kdump-utils: dracut_args --add vmcorepack)
# and name /usr/bin/vmcorepack as the collector (Fedora/RHEL /etc/kdump.conf):
#   core_collector vmcorepack -l --message-level 7 -d 31
# vmcorepack_python (dracut.conf or the environment): the interpreter that runs vmcorepack,
# default /opt/vmcorepack/bin/python (README "Install"); vmcorepack_omit: top-level modules to
# leave out (pyfiles.py's --omit; default tqdm, matplotlib, python-lzo and the codec wheels).

vmcorepack_python() {
    echo "${vmcorepack_python:-/opt/vmcorepack/bin/python}"
}

check() {
    # Only when asked for (dracut --add vmcorepack, or a module depending on it).
    [[ -x "$(vmcorepack_python)" ]] || return 1
    return 255
}

depends() {
    return 0
}

install() {
    local py list libs f d
    py=$(vmcorepack_python)
    list=$("$py" "$moddir/pyfiles.py" ${vmcorepack_omit:+--omit "$vmcorepack_omit"}) || {
        derror "vmcorepack: $py $moddir/pyfiles.py failed"
        return 1
    }
    # dracut-install copies each file and the targets of symlinks, but resolves the libraries of
    # executable files only: the extension modules (mode 644) get theirs from ldd here (numpy's
    # _multiarray_umath needs libblas.so.3, numpy.linalg liblapack.so.3 and libgfortran).
    libs=$(for f in $list; do
        [[ $f == *.so ]] && ldd "$f" 2> /dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 }'
    done | sort -u)
    # shellcheck disable=SC2086
    inst_multiple $list $libs || return 1
    # Byte-compile and drop the sources: sourceless .pyc next to where the .py was (python3
    # imports those), so the initramfs carries one file per module and python3 writes nothing.
    d=$(mktemp -d "${DRACUT_TMPDIR:-/tmp}/vmcorepack.XXXXXX")
    while read -r f; do
        [[ $f == *.py ]] && echo "$initdir$f"
    done <<< "$list" > "$d/py"
    "$py" - "$initdir" "$d/py" <<'EOF' || { rm -rf "$d"; return 1; }
import py_compile, sys, os
root, listing = sys.argv[1], sys.argv[2]
for path in open(listing).read().split():
    # The code object names the file as it will be in the initramfs, for tracebacks.
    py_compile.compile(path, cfile=path + "c", dfile=path[len(root):], doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    os.unlink(path)
EOF
    rm -rf "$d"
    # vmcorepack on PATH, as kdump services call their collector.
    ln_r "$(dirname "$py")/vmcorepack" /usr/bin/vmcorepack
}
