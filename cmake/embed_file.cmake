# Embeds one file as a C array: -DIN=FILE -DOUT=C_FILE -DNAME=SYMBOL gives
#   const char SYMBOL[] (the bytes, then a NUL) and const size_t SYMBOL_len.
# Used for docs/openapi.json, which `sluice serve` answers at /v1/openapi.json:
# the document in the binary is the one in the repository, never a copy.
file(READ ${IN} hex HEX)
file(SIZE ${IN} len)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," hex "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" hex "${hex}")
file(WRITE ${OUT} "/* Generated from ${IN} by cmake/embed_file.cmake. Do not edit. */\n#include <stddef.h>\nconst char ${NAME}[] = {\n${hex}0x00};\nconst size_t ${NAME}_len = ${len};\n")
