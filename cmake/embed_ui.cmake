# Embeds the dashboard's files (src/serve/ui/*) as one C table, so `sluice
# serve` answers them from the binary: no file is read at run time, no build
# step of its own, no copy. -DDIR=src/serve/ui -DOUT=C_FILE gives
#   const sl_ui_file sl__ui_files[] = {{"/ui/NAME", "TYPE", BYTES, LEN}, ...,
#   {NULL}}
# with TYPE from the file's extension (html, js, css, svg).
file(GLOB files RELATIVE ${DIR} ${DIR}/*)
list(SORT files)
set(body "")
set(table "")
set(i 0)
foreach(f ${files})
  get_filename_component(ext ${f} LAST_EXT)
  if(ext STREQUAL ".html")
    set(type "text/html; charset=utf-8")
  elseif(ext STREQUAL ".js")
    set(type "text/javascript; charset=utf-8")
  elseif(ext STREQUAL ".css")
    set(type "text/css; charset=utf-8")
  elseif(ext STREQUAL ".svg")
    set(type "image/svg+xml")
  else()
    message(FATAL_ERROR "embed_ui: no content type for ${f}")
  endif()
  file(READ ${DIR}/${f} hex HEX)
  file(SIZE ${DIR}/${f} len)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," hex "${hex}")
  string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" hex "${hex}")
  string(APPEND body "static const char f${i}[] = {\n${hex}0x00};\n")
  string(APPEND table "  {\"/ui/${f}\", \"${type}\", f${i}, ${len}},\n")
  math(EXPR i "${i} + 1")
endforeach()
file(WRITE ${OUT} "/* Generated from ${DIR} by cmake/embed_ui.cmake. Do not edit. */\n#include \"serve/ui.h\"\n${body}const sl_ui_file sl__ui_files[] = {\n${table}  {0, 0, 0, 0}};\n")
