"""Documents and e-mail (issues 12, 13): PDF, Office, OpenDocument, ``.eml``, form uploads.

One module per kind of document, each with its own library and bounds:

========================  ==============================  =====================
module                    formats                         reader
========================  ==============================  =====================
:mod:`.pdf`               PDF                             random (PDFium)
:mod:`.office_xml`        the text parts of ``.docx``     streaming (expat),
                          ``.xlsx`` ``.pptx`` ``.odt``    one part at a time as
                          ``.ods`` ``.odp`` (and flat     the decoder's zip
                          ODF)                            layer opens them
:mod:`.ole`               ``.xls`` ``.doc`` ``.ppt``      random (olefile,
                                                          calamine)
:mod:`.printer`           the printer settings part of    streaming (own
                          Office packages (DEVMODE, or    parser)
                          Office for Mac's records)
:mod:`.mail`              ``.eml`` (message/rfc822)       streaming (email)
:mod:`.mail`              bare ``multipart/*`` bodies:    streaming (email),
                          form uploads (``multipart/      the boundary taken
                          form-data``), other MIME        from the first line
                          bodies (``multipart/mixed``)
========================  ==============================  =====================

Importing this package registers every format below with
:mod:`gateway.classify.formats`.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.classify.formats import Format, register
from gateway.classify.formats.documents import mail, office_xml, ole, pdf, printer

#: Media types reported for Office Open XML parts: the package's type, so a
#: policy asking "is this a spreadsheet?" sees the workbook it was sent.
DOCX: str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX: str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX: str = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
OOXML_PROPERTIES: str = "application/vnd.openxmlformats-package.core-properties+xml"
ODT: str = "application/vnd.oasis.opendocument.text"
ODS: str = "application/vnd.oasis.opendocument.spreadsheet"
ODP: str = "application/vnd.oasis.opendocument.presentation"


def _odf(kind: str) -> Callable[[bytes], bool]:
    """An OpenDocument part whose body is of ``kind`` (``""``: any other part)."""

    def sniff(prefix: bytes) -> bool:
        return office_xml.odf_kind(prefix) == kind

    return sniff


register(Format("pdf", "application/pdf", pdf.sniff_pdf, random=pdf.read_pdf))
# Legacy Office: the specific type when the directory is in the sniffed
# prefix, else the generic compound file (the reader dispatches by stream).
for _name, _media_type, _sniff, _priority in (
    ("xls", "application/vnd.ms-excel", ole.sniff_xls, 1),
    ("doc", "application/msword", ole.sniff_doc, 1),
    ("ppt", "application/vnd.ms-powerpoint", ole.sniff_ppt, 1),
    ("ole", "application/x-ole-storage", ole.sniff_ole, 0),
):
    register(
        Format(
            _name,
            _media_type,
            _sniff,
            random=ole.read_ole,
            priority=_priority,
            leads=ole.OLE_MAGIC[:1],
        )
    )
register(
    Format(
        "docx-part",
        DOCX,
        office_xml.sniff_word,
        stream=office_xml.make_xml_reader,
        names_container=True,
    )
)
register(
    Format(
        "xlsx-part",
        XLSX,
        office_xml.sniff_sheet,
        stream=office_xml.make_xml_reader,
        names_container=True,
    )
)
register(
    Format(
        "pptx-part",
        PPTX,
        office_xml.sniff_slide,
        stream=office_xml.make_xml_reader,
        names_container=True,
    )
)
register(
    Format(
        "ooxml-properties",
        OOXML_PROPERTIES,
        office_xml.sniff_properties,
        stream=office_xml.make_xml_reader,
    )
)
for _name, _kind, _type in (
    ("odt-part", "text", ODT),
    ("ods-part", "spreadsheet", ODS),
    ("odp-part", "presentation", ODP),
    ("odf-part", "", "application/xml"),
):
    register(
        Format(
            _name,
            _type,
            _odf(_kind),
            stream=office_xml.make_xml_reader,
            names_container=_kind != "",  # content.xml of a text, sheet or slides package
        )
    )
# The printer set-up that Office keeps as a binary part of most packages.
register(
    Format(
        "printer-settings",
        "application/x-printer-settings",
        printer.sniff_printer_settings,
        stream=printer.make_printer_settings_reader,
    )
)
register(Format("email", "message/rfc822", mail.sniff_email, stream=mail.make_email_reader))
# A body that starts with its boundary line and a part's headers: a form
# upload (a browser, curl -F, requests' files=) or another bare MIME body.
register(
    Format(
        "form-data",
        "multipart/form-data",
        mail.sniff_form_data,
        stream=mail.make_form_data_reader,
    )
)
register(
    Format("multipart", "multipart/mixed", mail.sniff_multipart, stream=mail.make_multipart_reader)
)
register(
    Format(
        "xml-late-root",
        "application/xml",
        office_xml.sniff_late_root,
        stream=office_xml.LateRootReader,
        priority=-1,  # after every reader that recognises its root
    )
)
