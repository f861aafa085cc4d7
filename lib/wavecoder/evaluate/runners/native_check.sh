f=$1
d=$(readelf -W -d "$f") || exit 1
n=$(printf '%s\n' "$d" | awk '$2 == "(PREINIT_ARRAYSZ)" { print $3 }')
if [ "$n" != 8 ]; then
    echo "refused: .preinit_array holds ${n:-no} bytes, only the runner's entry is allowed"
    exit 1
fi
r=$(readelf -W -r "$f") || exit 1
s=$(readelf -W -s --dyn-syms "$f") || exit 1
ifuncs=$(printf '%s\n' "$s" | awk '$4 == "IFUNC" && $7 != "UND" { print $8 }')
if [ -n "$ifuncs" ] || printf '%s\n' "$r" | grep -q IRELATIV; then
    echo "refused: the program defines an ifunc (its resolver would run before the runner)"
    exit 1
fi
